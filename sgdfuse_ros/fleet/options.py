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
from sgdfuse_ros.ros.bags import (DEFAULT_FUSED_TOPIC, DEFAULT_QUEUE_SIZE, DEFAULT_RGB_TOPIC,
                                  DEFAULT_SLOP, DEFAULT_THERMAL_TOPIC)


@dataclass
class FuseOptions:
    """Topics, sync rule, output and pipeline configuration, as :func:`.bags.fuse_bag` takes
    them. Picklable (it travels to the Ray workers); :meth:`key` fingerprints it for the
    manifest, so a re-run with other options fuses the bags again."""

    thermal_topic: str = DEFAULT_THERMAL_TOPIC
    rgb_topic: str = DEFAULT_RGB_TOPIC
    fused_topic: str = DEFAULT_FUSED_TOPIC
    slop: float = DEFAULT_SLOP
    queue_size: int = DEFAULT_QUEUE_SIZE
    only_fused: bool = False
    #: Output storage (``mcap`` / ``sqlite3``); None: each input's own.
    storage: str | None = None
    #: ``rgb8`` / ``mono8``; None: as the pipeline's output.
    output_encoding: str | None = None
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
        ApproximateMatcher(queue_size=self.queue_size, slop=self.slop)

    def bag_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`.bags.fuse_bag` (all but ``pipeline`` and ``progress``)."""
        return dict(thermal_topic=self.thermal_topic, rgb_topic=self.rgb_topic,
                    fused_topic=self.fused_topic, slop=self.slop, queue_size=self.queue_size,
                    only_fused=self.only_fused, storage=self.storage,
                    output_encoding=self.output_encoding)

    def pipeline_config(self, threads: int | None = None) -> PipelineConfig:
        """A copy of the pipeline configuration; ``threads`` (CPU threads of the networks) is
        set unless the options already name it."""
        cfg = copy.deepcopy(self.pipeline)
        if threads:
            cfg.method_options = dict(cfg.method_options)
            cfg.method_options.setdefault('threads', int(threads))
        return cfg

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
