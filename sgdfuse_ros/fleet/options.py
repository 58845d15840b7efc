"""What every bag of a fleet run is fused with: the options of ``sgdfuse bag fuse``."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
import hashlib
import json
from typing import Any

import numpy as np

from sgdfuse_ros.core.matching import ApproximateMatcher
from sgdfuse_ros.fusion.pipeline import PipelineConfig
from sgdfuse_ros.params import DEFAULTS
from sgdfuse_ros.ros.convert import NONFINITE_POLICIES


@dataclass
class FuseOptions:
    """Topics, sync rule, mask schedule, output and pipeline configuration, as
    :func:`sgdfuse_ros.ros.bag_fuse.fuse_bag` takes them (defaults: the node's,
    :mod:`sgdfuse_ros.params`). Picklable (it travels to the Ray workers); :meth:`key`
    fingerprints it for the manifest, so a re-run with other options fuses the bags again."""

    thermal_topic: str = DEFAULTS['thermal_topic']
    rgb_topic: str = DEFAULTS['rgb_topic']
    fused_topic: str = DEFAULTS['fused_topic']
    slop: float = DEFAULTS['sync_slop']
    queue_size: int = DEFAULTS['sync_queue_size']
    only_fused: bool = False
    #: Output storage (``mcap`` / ``sqlite3``); None: each input's own.
    storage: str | None = None
    #: ``rgb8`` / ``mono8``; None: as the pipeline's output.
    output_encoding: str | None = None
    #: Mask refreshes per second of bag time, for methods that use masks.
    mask_rate: float = DEFAULTS['mask_rate']
    #: Seconds after which masks count as stale; None: three refresh periods, at least 1 s.
    mask_max_age: float | None = None
    #: NaN or infinite pixels of float thermal frames: ``replace`` or ``reject``.
    thermal_nonfinite: str = DEFAULTS['thermal_nonfinite']
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def validate(self) -> None:
        """Raise ValueError for options no bag could be fused with (checked once, up front)."""
        if self.thermal_topic == self.rgb_topic:
            raise ValueError('the thermal and RGB topics must differ')
        if self.fused_topic in (self.thermal_topic, self.rgb_topic):
            raise ValueError(f'the fused topic {self.fused_topic!r} must differ from the input '
                             'topics')
        if self.output_encoding not in (None, 'rgb8', 'mono8'):
            raise ValueError(f'output encoding must be rgb8 or mono8, got '
                             f'{self.output_encoding!r}')
        if self.storage not in (None, 'mcap', 'sqlite3'):
            raise ValueError(f'storage must be mcap or sqlite3, got {self.storage!r}')
        if self.thermal_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f'thermal_nonfinite must be one of {", ".join(NONFINITE_POLICIES)}'
                             f', got {self.thermal_nonfinite!r}')
        for name in ('mask_rate', 'mask_max_age'):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f'{name} must be a number > 0, got {value!r}')
        ApproximateMatcher(queue_size=self.queue_size, slop=self.slop)

    def bag_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~sgdfuse_ros.ros.bag_fuse.fuse_bag` (all but
        ``pipeline`` and ``progress``)."""
        return dict(thermal_topic=self.thermal_topic, rgb_topic=self.rgb_topic,
                    fused_topic=self.fused_topic, slop=self.slop, queue_size=self.queue_size,
                    only_fused=self.only_fused, storage=self.storage,
                    output_encoding=self.output_encoding, mask_rate=self.mask_rate,
                    mask_max_age=self.mask_max_age, thermal_nonfinite=self.thermal_nonfinite)

    def pipeline_config(self) -> PipelineConfig:
        """A copy of the pipeline configuration (each worker builds its pipeline from one)."""
        return copy.deepcopy(self.pipeline)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the homography as a list)."""
        d = asdict(self)
        h = d['pipeline'].get('homography')
        if h is not None:
            d['pipeline']['homography'] = np.asarray(h, float).ravel().tolist()
        if d['pipeline'].get('work_size') is not None:
            d['pipeline']['work_size'] = list(d['pipeline']['work_size'])
        return d

    def key(self) -> str:
        """A short fingerprint of everything that changes the fused output."""
        text = json.dumps(self.as_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
