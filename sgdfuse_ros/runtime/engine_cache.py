"""The on-disk cache of TensorRT engines: keys, file names, JSON sidecars and atomic writes.

An engine is only valid for the ONNX graph, input shapes (the optimization profile), precision,
GPU compute capability and TensorRT version it was built for. Each of those goes into an
:class:`EngineKey`; the engine file is named after the parts a person cares about::

    engines/<model>_<H>x<W>_<fp16|fp32>_sm<cc>_trt<version>.engine
    engines/<model>_<H>x<W>_<fp16|fp32>_sm<cc>_trt<version>.json     (the sidecar)

and the sidecar holds the whole key plus the engine file's size and SHA-256. An engine is used
only when its sidecar matches the wanted key exactly (:func:`check_engine` says why not
otherwise); anything else is rebuilt (:func:`get_or_build`). Files are written to a temporary
file in the same folder and renamed, the sidecar last, so a crash or a concurrent reader never
sees half an engine. Nothing here imports TensorRT: it is tested on any machine.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
import hashlib
import json
import os
from pathlib import Path
import re
import time
from typing import Callable, Iterator

from sgdfuse_ros.core.files import atomic_write_bytes
from sgdfuse_ros.core.hashing import sha256_file

PRECISIONS = ('fp16', 'fp32')
SIDECAR_FORMAT = 'sgdfuse-trt-engine'
SIDECAR_VERSION = 1

#: Shapes of one input in an optimization profile: ``(min, opt, max)``, each a full shape.
ProfileShapes = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def _safe(text: str) -> str:
    """A file-name-safe version of a name or version string."""
    return re.sub(r'[^A-Za-z0-9._-]+', '-', str(text)).strip('-') or 'x'


def compute_capability_tag(cc: tuple[int, int] | str) -> str:
    """``(8, 6)`` or ``'8.6'`` -> ``'86'`` (the ``sm`` number)."""
    if isinstance(cc, str):
        parts = cc.replace('sm', '').split('.')
        if len(parts) == 1:
            if not parts[0].isdigit():
                raise ValueError(f'bad compute capability {cc!r}')
            return parts[0]
        cc = (int(parts[0]), int(parts[1]))
    major, minor = cc
    return f'{int(major)}{int(minor)}'


def profile_around(shape: tuple[int, ...], *, multiple: int = 1, low: float = 0.5,
                   high: float = 1.5) -> ProfileShapes:
    """An optimization profile for an ``N x C x H x W`` input centred on its working size.

    ``opt`` is the working shape; ``min``/``max`` scale H and W by ``low``/``high``, rounded to
    the network's ``multiple`` (at least one multiple).
    """
    if len(shape) < 2:
        raise ValueError(f'need a shape with height and width, got {shape}')
    if not 0 < low <= 1.0 <= high:
        raise ValueError(f'need 0 < low <= 1 <= high, got {low}, {high}')
    m = max(int(multiple), 1)

    def scaled(f: float, up: bool) -> tuple[int, ...]:
        hw = []
        for side in shape[-2:]:
            s = side * f
            s = (int(-(-s // m)) if up else int(s // m)) * m
            hw.append(max(s, m))
        return tuple(int(d) for d in shape[:-2]) + tuple(hw)

    opt = tuple(int(d) for d in shape)
    return scaled(low, False), opt, scaled(high, True)


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. Two keys equal <=> the engine can be reused."""

    model: str
    onnx_sha256: str
    #: input name -> (min, opt, max) shapes of the optimization profile.
    profile: tuple[tuple[str, ProfileShapes], ...]
    precision: str
    #: GPU compute capability, ``'86'`` for an RTX 30xx, ``'87'`` for a Jetson Orin.
    compute_capability: str
    trt_version: str

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {PRECISIONS}, got {self.precision!r}')
        if not self.profile:
            raise ValueError('an engine key needs the input shapes')
        norm = tuple((str(name), tuple(tuple(int(d) for d in s) for s in shapes))
                     for name, shapes in self.profile)
        for name, shapes in norm:
            if len(shapes) != 3:
                raise ValueError(f'input {name!r}: need (min, opt, max) shapes')
        object.__setattr__(self, 'profile', norm)
        object.__setattr__(self, 'compute_capability',
                           compute_capability_tag(self.compute_capability))

    @classmethod
    def create(cls, model: str, onnx_sha256: str, profile: dict[str, ProfileShapes],
               precision: str, compute_capability: tuple[int, int] | str,
               trt_version: str) -> 'EngineKey':
        return cls(model, onnx_sha256, tuple(sorted(profile.items())), precision,
                   compute_capability, trt_version)

    @property
    def working_size(self) -> tuple[int, int]:
        """``(H, W)`` of the profile's ``opt`` shape of the first input (by name)."""
        opt = self.profile[0][1][1]
        return (opt[-2], opt[-1]) if len(opt) >= 2 else (opt[-1], 1)

    @property
    def filename(self) -> str:
        h, w = self.working_size
        return (f'{_safe(self.model)}_{h}x{w}_{self.precision}_sm{self.compute_capability}'
                f'_trt{_safe(self.trt_version)}.engine')

    def to_dict(self) -> dict:
        d = asdict(self)
        d['profile'] = {name: [list(s) for s in shapes] for name, shapes in self.profile}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> 'EngineKey':
        prof = {name: tuple(tuple(s) for s in shapes) for name, shapes in d['profile'].items()}
        return cls.create(d['model'], d['onnx_sha256'], prof, d['precision'],
                          str(d['compute_capability']), d['trt_version'])

    def differences(self, other: 'EngineKey') -> list[str]:
        """Human-readable reasons why ``other`` (a cached engine's key) does not fit ``self``."""
        out = []
        for f in ('model', 'onnx_sha256', 'precision', 'compute_capability', 'trt_version'):
            a, b = getattr(self, f), getattr(other, f)
            if a != b:
                out.append(f'{f} is {b!r}, want {a!r}')
        if self.profile != other.profile:
            out.append(f'input shapes are {dict(other.profile)}, want {dict(self.profile)}')
        return out


def engine_paths(cache_dir: str | os.PathLike, key: EngineKey) -> tuple[Path, Path]:
    """``(engine file, JSON sidecar)`` for a key in a cache folder."""
    engine = Path(cache_dir) / key.filename
    return engine, engine.with_suffix('.json')


def read_sidecar(path: str | os.PathLike) -> dict:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get('format') != SIDECAR_FORMAT:
        raise ValueError(f'{path}: not an engine sidecar')
    return data


def check_engine(engine_path: str | os.PathLike, key: EngineKey, *,
                 verify_hash: bool = True) -> str | None:
    """None when the engine file is valid for ``key``, else the reason it is stale."""
    engine_path = Path(engine_path)
    sidecar = engine_path.with_suffix('.json')
    if not engine_path.is_file():
        return f'no engine file {engine_path}'
    if not sidecar.is_file():
        return f"no sidecar {sidecar} (the engine's key is unknown)"
    try:
        data = read_sidecar(sidecar)
        cached = EngineKey.from_dict(data['key'])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f'unreadable sidecar {sidecar}: {exc}'
    diff = key.differences(cached)
    if diff:
        return 'built for another configuration: ' + '; '.join(diff)
    size = engine_path.stat().st_size
    if data.get('engine_size') != size:
        return f'engine file size {size} does not match the sidecar ({data.get("engine_size")})'
    if verify_hash and data.get('engine_sha256') != sha256_file(engine_path):
        return 'engine file hash does not match the sidecar (replaced or corrupted)'
    return None


def write_engine(engine_path: str | os.PathLike, key: EngineKey, data: bytes,
                 extra: dict | None = None) -> None:
    """Store an engine and its sidecar (engine first, sidecar last: the sidecar commits it)."""
    engine_path = Path(engine_path)
    sidecar = engine_path.with_suffix('.json')
    if sidecar.exists():
        sidecar.unlink()  # an engine without a matching sidecar is never used
    atomic_write_bytes(engine_path, bytes(data))
    meta = {'format': SIDECAR_FORMAT, 'version': SIDECAR_VERSION, 'key': key.to_dict(),
            'engine_size': len(data), 'engine_sha256': hashlib.sha256(data).hexdigest(),
            'created': time.strftime('%Y-%m-%dT%H:%M:%S%z')}
    meta.update(extra or {})
    atomic_write_bytes(sidecar, (json.dumps(meta, indent=2) + '\n').encode())


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock file so that two processes do not build the same engine at once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix('.lock'), 'w') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def get_or_build(engine_path: str | os.PathLike, key: EngineKey, build: Callable[[], bytes], *,
                 force: bool = False, log: Callable[[str], None] | None = None
                 ) -> tuple[Path, bool]:
    """Return ``(engine path, built)``: reuse a valid cached engine or build and store one.

    ``build()`` returns the serialized engine. ``force`` rebuilds whatever is cached
    (``force_engine_update``). The reason for a rebuild goes to ``log``.
    """
    engine_path = Path(engine_path)
    with _build_lock(engine_path):
        reason = 'forced rebuild (force_engine_update)' if force else check_engine(
            engine_path, key)
        if reason is None:
            return engine_path, False
        if log:
            log(f'building TensorRT engine {engine_path.name}: {reason}')
        data = build()
        write_engine(engine_path, key, data)
        return engine_path, True
