"""The ``tensorrt`` backend: an engine built from an ONNX file, cached and keyed on disk (see
:mod:`.engine_cache`), run on CUDA buffers owned by torch tensors (no pycuda)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sgdfuse_ros.core.hashing import sha256_file
from . import engine_cache
from .base import LOG, Backend, BackendError, as_float32, default_engines_dir, reject_unknown


def import_tensorrt():
    """The ``tensorrt`` module, or :class:`BackendError` when it is not installed."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendError('tensorrt', 'TensorRT is not installed (pip install '
                           '"sgdfuse_ros[tensorrt]" on a machine with an NVIDIA GPU and driver; '
                           f'import failed: {exc})') from exc
    return tensorrt


def cuda_device(device: int | str):
    """Check for CUDA through torch (no pycuda); returns ``(torch, torch.device)``."""
    import torch

    if not torch.cuda.is_available():
        raise BackendError('tensorrt', 'no CUDA device (torch.cuda.is_available() is False: no '
                           'NVIDIA GPU or driver, or a CPU-only torch build)')
    dev = torch.device(device if isinstance(device, str) else f'cuda:{int(device)}')
    if dev.type != 'cuda':
        raise BackendError('tensorrt', f'device must be a CUDA device, got {device!r}')
    if (dev.index or 0) >= torch.cuda.device_count():
        raise BackendError('tensorrt', f'no CUDA device {dev} ({torch.cuda.device_count()} '
                           'present)')
    return torch, dev


def onnx_input_shapes(onnx_path: str | os.PathLike) -> dict[str, list[int | str]]:
    """Input name -> shape (ints, or the names of dynamic dimensions) of an ONNX file."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    consts = {i.name for i in model.graph.initializer}
    out = {}
    for inp in model.graph.input:
        if inp.name in consts:
            continue
        dims = inp.type.tensor_type.shape.dim
        out[inp.name] = [d.dim_value if d.HasField('dim_value') else (d.dim_param or '?')
                         for d in dims]
    return out


def onnx_output_names(onnx_path: str | os.PathLike) -> list[str]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return [o.name for o in model.graph.output]


def build_engine_bytes(trt, onnx_path: str | os.PathLike,
                       profile: Mapping[str, engine_cache.ProfileShapes], *, precision: str,
                       workspace_mb: int = 1024, optimization_level: int | None = None,
                       logger=None) -> bytes:
    """Parse an ONNX file and build a serialized engine with the TensorRT 10 Python API."""
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError('tensorrt', f'the ONNX parser rejected {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if precision == 'fp16':
        if not getattr(builder, 'platform_has_fast_fp16', True):
            LOG.warning('tensorrt: this GPU has no fast FP16; the FP16 engine may be slow')
        config.set_flag(trt.BuilderFlag.FP16)
    if optimization_level is not None:
        config.builder_optimization_level = int(optimization_level)
    prof = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name not in profile:
            raise BackendError('tensorrt', f'no shapes for input {tensor.name!r} (have '
                               f'{sorted(profile)})')
        lo, opt, hi = profile[tensor.name]
        prof.set_shape(tensor.name, lo, opt, hi)
    config.add_optimization_profile(prof)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError('tensorrt', f'building the engine from {onnx_path} failed (see the '
                           'TensorRT log above)')
    return bytes(serialized)


class TensorRTBackend(Backend):
    """A TensorRT engine built from an ONNX file, cached and keyed (see :mod:`.engine_cache`).

    Options:

    ``input_shapes``        input name -> working shape (``N x C x H x W``). Dynamic dimensions
                            get an optimization profile around it. Without it, a graph with
                            dynamic dimensions gets its engine at the first frame's shape, and
                            a frame outside that profile gets another (each cached).
    ``multiple``            the network's side multiple (profile bounds are rounded to it).
    ``profile_range``       ``(low, high)`` scale of the profile's min/max H and W (0.5, 1.5).
    ``precision``           ``fp16`` (default) or ``fp32``; ``enable_fp16`` is an alias.
    ``engines_dir``         the cache folder (default :func:`default_engines_dir`).
    ``engine_file_path``    an explicit engine file (its sidecar is still checked; without an
                            ONNX file a stale one is an error, with one it is rebuilt).
    ``force_engine_update`` rebuild even if a valid engine is cached.
    ``model_name``          the file-name prefix (default: the ONNX file's stem).
    ``device``              CUDA device index or ``cuda:N``.

    Runs on CUDA buffers owned by torch tensors (no pycuda). :meth:`run` takes numpy;
    :meth:`run_tensors` takes and returns torch CUDA tensors, to chain stages without copies.
    """

    name = 'tensorrt'

    def __init__(self, onnx_path: str | os.PathLike | None = None, *,
                 input_shapes: Mapping[str, Sequence[int]] | None = None, multiple: int = 1,
                 profile_range: tuple[float, float] = (0.5, 1.5), precision: str | None = None,
                 enable_fp16: bool | None = None, engines_dir: str | os.PathLike | None = None,
                 engine_file_path: str | os.PathLike | None = None,
                 force_engine_update: bool = False, model_name: str | None = None,
                 device: int | str = 0, workspace_mb: int = 1024,
                 optimization_level: int | None = None, **unused):
        reject_unknown('tensorrt', unused)
        if precision is None:
            precision = 'fp32' if enable_fp16 is False else 'fp16'
        if precision not in engine_cache.PRECISIONS:
            raise ValueError(f'precision must be one of {engine_cache.PRECISIONS}, got '
                             f'{precision!r}')
        if onnx_path is None and engine_file_path is None:
            raise ValueError('tensorrt: need onnx_path or engine_file_path')
        trt = import_tensorrt()
        torch, dev = cuda_device(device)
        self._trt, self._torch, self.device = trt, torch, dev
        self.precision = precision
        self.multiple = int(multiple)
        self.profile_range = (float(profile_range[0]), float(profile_range[1]))
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._cc = torch.cuda.get_device_capability(dev)
        self._force = bool(force_engine_update)
        self._engine_file = Path(engine_file_path) if engine_file_path else None
        self._engines_dir = Path(engines_dir) if engines_dir else default_engines_dir()
        self._build_opts = {'workspace_mb': workspace_mb,
                            'optimization_level': optimization_level}
        self.engine = self.context = None
        self.engine_path: Path | None = None
        self._profile: dict[str, engine_cache.ProfileShapes] = {}

        if onnx_path is None:  # a prebuilt engine, nothing to rebuild it from
            self.onnx_path = None
            path = self._engine_file
            reason = self._check_prebuilt(path, precision, self._cc, trt.__version__)
            if reason:
                raise BackendError('tensorrt', f'stale engine {path}: {reason}; pass the ONNX '
                                   'file to rebuild it')
            self._activate(path, self._deserialize(path))
            return
        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise BackendError('tensorrt', f'no ONNX file {self.onnx_path}')
        self.model_name = model_name or self.onnx_path.stem
        self._onnx_sha256 = sha256_file(self.onnx_path)
        self._declared = onnx_input_shapes(self.onnx_path)
        self.input_names = list(self._declared)
        self.output_names = onnx_output_names(self.onnx_path)
        given = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
        static = all(isinstance(d, int) and d > 0 for dims in self._declared.values()
                     for d in dims)
        if given or static:
            self._load_for(given)

    # -- engines ------------------------------------------------------------------------------

    def profile_for(self, shapes: Mapping[str, tuple[int, ...]]
                    ) -> dict[str, engine_cache.ProfileShapes]:
        """The optimization profile around working ``shapes`` (all inputs with dynamic
        dimensions need one)."""
        unknown = set(shapes) - set(self._declared)
        if unknown:
            raise ValueError(f'tensorrt: {sorted(unknown)} are not inputs of {self.onnx_path} '
                             f'({sorted(self._declared)})')
        low, high = self.profile_range
        profile = {}
        for name, dims in self._declared.items():
            dynamic = [not (isinstance(d, int) and d > 0) for d in dims]
            if name in shapes:
                shape = tuple(shapes[name])
                if len(shape) != len(dims) or any(
                        not dyn and d != s for d, s, dyn in zip(dims, shape, dynamic)):
                    raise ValueError(f'tensorrt: shape {shape} for {name!r} does not fit the '
                                     f"graph's {dims}")
            elif not any(dynamic):
                shape = tuple(dims)
            else:
                raise BackendError('tensorrt', f'input {name!r} has dynamic dimensions {dims}: '
                                   'give input_shapes (the working resolution)')
            if any(dynamic):
                lo, opt, hi = engine_cache.profile_around(shape, multiple=self.multiple,
                                                          low=low, high=high)
                lo = tuple(a if dyn else s for a, s, dyn in zip(lo, shape, dynamic))
                hi = tuple(a if dyn else s for a, s, dyn in zip(hi, shape, dynamic))
                profile[name] = (lo, tuple(shape), hi)
            else:
                profile[name] = (shape, shape, shape)
        return profile

    def engine_key(self, profile: Mapping[str, engine_cache.ProfileShapes]
                   ) -> engine_cache.EngineKey:
        return engine_cache.EngineKey.create(self.model_name, self._onnx_sha256, dict(profile),
                                             self.precision, self._cc, self._trt.__version__)

    def _load_for(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        profile = self.profile_for(shapes)
        key = self.engine_key(profile)
        path = self._engine_file or engine_cache.engine_paths(self._engines_dir, key)[0]
        torch, trt = self._torch, self._trt

        def build() -> bytes:
            with torch.cuda.device(self.device):
                return build_engine_bytes(trt, self.onnx_path, profile,
                                          precision=self.precision, logger=self._logger,
                                          **self._build_opts)

        path, built = engine_cache.get_or_build(path, key, build, force=self._force,
                                                log=LOG.info)
        self._force = False  # once per backend, not once per shape
        engine = self._deserialize(path)
        if engine is None and not built:  # the key matched but this runtime cannot load it
            path, built = engine_cache.get_or_build(path, key, build, force=True, log=LOG.info)
            engine = self._deserialize(path)
        self._profile = profile
        self._activate(path, engine)

    def _activate(self, path: Path, engine) -> None:
        trt, torch = self._trt, self._torch
        if engine is None:
            raise BackendError('tensorrt', f'stale engine {path}: TensorRT {trt.__version__} '
                               'cannot deserialize it (built by another version or for another '
                               'GPU?)')
        context = engine.create_execution_context()
        if context is None:
            raise BackendError('tensorrt', 'cannot create an execution context (out of GPU '
                               'memory?)')
        self.engine, self.context, self.engine_path = engine, context, path
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        mode_in = trt.TensorIOMode.INPUT
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == mode_in]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) != mode_in]
        self._dtypes = {n: _torch_dtype(trt, torch, engine.get_tensor_dtype(n)) for n in names}
        if not hasattr(self, '_stream'):
            self._stream = torch.cuda.Stream(device=self.device)

    def _fits(self, shapes: Mapping[str, tuple[int, ...]]) -> bool:
        if self.engine is None:
            return False
        if not self._profile:  # a prebuilt engine: its own profile decides
            return True
        for name, shape in shapes.items():
            lo, _, hi = self._profile[name]
            if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
                return False
        return True

    @staticmethod
    def _check_prebuilt(path: Path, precision: str, cc, version: str) -> str | None:
        sidecar = path.with_suffix('.json')
        if not path.is_file():
            return 'no such file'
        if not sidecar.is_file():
            return 'no sidecar (its build configuration is unknown)'
        try:
            meta = engine_cache.read_sidecar(sidecar)
            key = engine_cache.EngineKey.from_dict(meta['key'])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f'unreadable sidecar: {exc}'
        if meta.get('engine_size') != path.stat().st_size or \
                meta.get('engine_sha256') != sha256_file(path):
            return 'the engine file does not match its sidecar (replaced or corrupted)'
        wrong = []
        if key.trt_version != version:
            wrong.append(f'built by TensorRT {key.trt_version}, this is {version}')
        if key.compute_capability != engine_cache.compute_capability_tag(cc):
            wrong.append(f'built for sm{key.compute_capability}, this GPU is '
                         f'sm{engine_cache.compute_capability_tag(cc)}')
        if key.precision != precision:
            wrong.append(f'precision {key.precision}, want {precision}')
        return '; '.join(wrong) or None

    def _deserialize(self, path: Path):
        if getattr(self, '_runtime', None) is None:
            # one runtime for the backend's life: engines must not outlive their runtime
            self._runtime = self._trt.Runtime(self._logger)
        with self._torch.cuda.device(self.device):
            return self._runtime.deserialize_cuda_engine(path.read_bytes())

    # -- running ------------------------------------------------------------------------------

    def summary(self) -> str:
        return f'tensorrt ({self.precision}, {self._torch.cuda.get_device_name(self.device)})'

    def describe(self) -> str:
        name = self._torch.cuda.get_device_name(self.device)
        engine = self.engine_path.name if self.engine_path else 'engine built at the first frame'
        return f'tensorrt {self._trt.__version__} {self.precision} on {name} ({engine})'

    def run_tensors(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run on torch tensors or arrays (copied to the GPU when needed); returns CUDA
        tensors, complete when the call returns."""
        torch = self._torch
        self._check_inputs(inputs)
        shapes = {n: tuple(inputs[n].shape) for n in self.input_names}
        if not self._fits(shapes):
            if self.onnx_path is None:
                raise ValueError('tensorrt: the engine was not built for these input shapes '
                                 f'{shapes}')
            self._load_for(shapes)
        ctx = self.context
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            keep = []
            for n in self.input_names:
                t = inputs[n]
                if not torch.is_tensor(t):
                    t = torch.from_numpy(np.ascontiguousarray(t))
                t = t.to(self.device, dtype=self._dtypes[n], non_blocking=True).contiguous()
                if not ctx.set_input_shape(n, tuple(t.shape)):
                    raise ValueError(f'tensorrt: shape {tuple(t.shape)} of {n!r} is outside the '
                                     "engine's optimization profile")
                ctx.set_tensor_address(n, t.data_ptr())
                keep.append(t)
            outs = {}
            for n in self.output_names:
                shape = tuple(ctx.get_tensor_shape(n))
                out = torch.empty(shape, dtype=self._dtypes[n], device=self.device)
                ctx.set_tensor_address(n, out.data_ptr())
                outs[n] = out
            if not ctx.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError('tensorrt: execute_async_v3 failed (see the TensorRT log)')
        self._stream.synchronize()
        del keep
        return outs

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.run_tensors({n: as_float32(x) for n, x in inputs.items()})
        return {n: t.float().cpu().numpy() for n, t in outs.items()}

    def close(self) -> None:
        self.context = None
        self.engine = None
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()


def _torch_dtype(trt, torch, dt):
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.INT32: torch.int32, trt.DataType.INT8: torch.int8,
             trt.DataType.BOOL: torch.bool}
    for attr, tdt in (('INT64', torch.int64), ('BF16', torch.bfloat16), ('UINT8', torch.uint8)):
        if hasattr(trt.DataType, attr):
            table[getattr(trt.DataType, attr)] = tdt
    if dt not in table:
        raise BackendError('tensorrt', f'unsupported engine tensor type {dt}')
    return table[dt]
