"""Inference backends behind one interface, chosen by name: torch, onnxruntime, tensorrt.

A :class:`Backend` runs one model: named ``float32`` numpy inputs in, named numpy outputs out::

    be = build_backend('onnxruntime', onnx_path='engines/stage1_0123abcd.onnx')
    f1 = be.run({'ir': ir, 'vis': vis})['f1']

``torch`` runs a module (the reference and the training framework), ``onnxruntime`` an ONNX file
(the embedded default on machines without CUDA), ``tensorrt`` an engine built from an ONNX file
and cached under ``engines/`` (see :mod:`.engine_cache`). A backend that cannot load here raises
:class:`BackendError` naming why (no CUDA device, TensorRT not installed, a stale engine...);
:func:`build_with_fallback` then falls back to another backend, ``onnxruntime`` by default.

The heavy packages (torch, onnxruntime, tensorrt) are imported only when a backend is built.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import logging
import os
from pathlib import Path
import threading
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from . import engine_cache

LOG = logging.getLogger('sgdfuse_ros.runtime')

#: Backend names in the order ``auto`` prefers them on a machine that has what they need.
BACKEND_NAMES = ('torch', 'onnxruntime', 'tensorrt')
DEFAULT_FALLBACK = 'onnxruntime'


class BackendError(RuntimeError):
    """A backend that cannot be built or run on this machine; the message says why."""

    def __init__(self, backend: str, reason: str):
        super().__init__(f'backend {backend!r} cannot load: {reason}')
        self.backend = backend
        self.reason = reason


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


# ----------------------------------------------------------------------------------------------
# The interface
# ----------------------------------------------------------------------------------------------

class Backend(ABC):
    """One loaded model. Build once, then call :meth:`run` per frame (one thread at a time)."""

    #: Registry name (``torch``, ``onnxruntime``, ``tensorrt``).
    name: ClassVar[str] = ''
    #: ``onnx`` when the backend runs an ONNX file, ``module`` when it runs a torch module.
    source: ClassVar[str] = 'onnx'

    input_names: list[str]
    output_names: list[str]

    @abstractmethod
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on named ``float32`` arrays; returns the named outputs (numpy)."""

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        return self.run(inputs)

    def describe(self) -> str:
        """One line on what runs where (for logs and the bench)."""
        return self.name

    def close(self) -> None:
        """Release what the backend holds (GPU memory, sessions)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_inputs(self, inputs: Mapping[str, Any]) -> None:
        missing = [n for n in self.input_names if n not in inputs]
        extra = [n for n in inputs if n not in self.input_names]
        if missing or extra:
            raise ValueError(f"{self.name}: inputs {sorted(inputs)} do not match the model's "
                             f'{self.input_names} (missing {missing}, unexpected {extra})')


def _as_float32(x: np.ndarray) -> np.ndarray:
    """A C-contiguous array; float64 becomes float32, other types are kept."""
    x = np.asarray(x)
    if x.dtype == np.float64:
        return np.ascontiguousarray(x, dtype=np.float32)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


#: onnxruntime type strings -> numpy dtypes of the inputs we feed.
_ORT_TYPES = {'tensor(float)': np.float32, 'tensor(float16)': np.float16,
              'tensor(double)': np.float64, 'tensor(int64)': np.int64,
              'tensor(int32)': np.int32, 'tensor(bool)': np.bool_, 'tensor(uint8)': np.uint8}


# ----------------------------------------------------------------------------------------------
# torch
# ----------------------------------------------------------------------------------------------

class TorchBackend(Backend):
    """A PyTorch module run in inference mode; the reference for the other backends.

    ``module(*inputs)`` takes the inputs in ``input_names`` order and returns a tensor or a tuple
    in ``output_names`` order. Options: ``device``, ``threads`` (torch CPU threads; process-wide),
    ``channels_last`` (NHWC memory format for 4-D inputs and the module's weights).
    """

    name = 'torch'
    source = 'module'

    def __init__(self, module, input_names: Sequence[str], output_names: Sequence[str], *,
                 device: str = 'cpu', threads: int | None = None, channels_last: bool = False,
                 **unused):
        import torch

        _reject_unknown('torch', unused)
        self._torch = torch
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise BackendError('torch', f'bad device {device!r}: {exc}') from exc
        if self.device.type == 'cuda' and not torch.cuda.is_available():
            raise BackendError('torch', 'no CUDA device (torch.cuda.is_available() is False)')
        if threads:
            torch.set_num_threads(int(threads))
        self.channels_last = bool(channels_last)
        module = module.to(self.device).eval()
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self.input_names = list(input_names)
        self.output_names = list(output_names)

    def describe(self) -> str:
        t = self._torch
        threads = f', {t.get_num_threads()} threads' if self.device.type == 'cpu' else ''
        nhwc = ', channels_last' if self.channels_last else ''
        return f'torch {t.__version__} on {self.device}{threads}{nhwc}'

    def run_tensors(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run on torch tensors (already on the device); returns torch tensors."""
        self._check_inputs(inputs)
        with self._torch.inference_mode():
            out = self.module(*[inputs[n] for n in self.input_names])
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if len(outs) != len(self.output_names):
            raise RuntimeError(f'torch: the module returned {len(outs)} outputs, expected '
                               f'{self.output_names}')
        return dict(zip(self.output_names, outs))

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        self._check_inputs(inputs)
        tensors = {}
        for n in self.input_names:
            t = torch.from_numpy(_as_float32(inputs[n])).to(self.device)
            if self.channels_last and t.dim() == 4:
                t = t.contiguous(memory_format=torch.channels_last)
            tensors[n] = t
        outs = self.run_tensors(tensors)
        return {n: t.float().cpu().contiguous().numpy() for n, t in outs.items()}


# ----------------------------------------------------------------------------------------------
# onnxruntime
# ----------------------------------------------------------------------------------------------

#: Short provider names -> onnxruntime execution providers.
ORT_PROVIDERS = {
    'cpu': 'CPUExecutionProvider',
    'cuda': 'CUDAExecutionProvider',
    'tensorrt': 'TensorrtExecutionProvider',
}
GRAPH_OPTIMIZATION = ('disable', 'basic', 'extended', 'all')

_SESSIONS: dict[tuple, Any] = {}
_SESSIONS_LOCK = threading.Lock()


def clear_session_cache() -> None:
    """Forget the shared onnxruntime sessions (the next build creates new ones)."""
    with _SESSIONS_LOCK:
        _SESSIONS.clear()


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError('onnxruntime', 'the onnxruntime package is not installed '
                           '(pip install "sgdfuse_ros[onnx]")') from exc
    return onnxruntime


class OrtBackend(Backend):
    """An ONNX file run by ONNX Runtime with session options tuned for small CPUs.

    Options:

    ``threads``            intra-op threads; default: the cores this process may use.
    ``providers``          ``'auto'`` (CUDA when onnxruntime-gpu sees a device, else CPU), or a
                           list of ``cpu``, ``cuda``, ``tensorrt``; asking for one that is not
                           present is an error (:class:`BackendError`).
    ``graph_optimization`` ``disable``, ``basic``, ``extended`` or ``all`` (default: ``all``,
                           which includes the CPU's blocked NCHWc layout transformation).
    ``io_binding``         bind inputs and pre-sized outputs (``auto``: on for GPU providers,
                           where it keeps outputs on the device until one copy; off on CPU,
                           where it measured no gain).
    ``allow_spinning``     let idle intra-op threads spin-wait for work (default off: on a
                           shared 2-core machine, and beside the node's mask worker, spinning
                           threads steal the cores they wait for; stage 1 measured 2x slower
                           with spinning under load, see docs/benchmarks.md).
    ``reuse``              share one session per (file, options) across backends (default on).
    ``fp16`` / ``trt_cache``  TensorRT execution provider: FP16 and its engine cache folder.

    Sessions are created once and reused: the ONNX graph is optimized at load, not per call.
    """

    name = 'onnxruntime'

    def __init__(self, onnx_path: str | os.PathLike, *, threads: int | None = None,
                 providers: str | Sequence[str] = 'auto', graph_optimization: str = 'all',
                 io_binding: bool | str = 'auto', allow_spinning: bool = False,
                 reuse: bool = True, device_id: int = 0, fp16: bool = True,
                 trt_cache: str | os.PathLike | None = None, **unused):
        _reject_unknown('onnxruntime', unused)
        ort = _import_onnxruntime()
        self._ort = ort
        path = Path(onnx_path)
        if not path.is_file():
            raise BackendError('onnxruntime', f'no ONNX file {path} (run `sgdfuse export --onnx`)')
        if graph_optimization not in GRAPH_OPTIMIZATION:
            raise ValueError(f'graph_optimization must be one of {GRAPH_OPTIMIZATION}, got '
                             f'{graph_optimization!r}')
        self.path = path
        self.threads = int(threads) if threads else available_cores()
        self.provider_list = self._resolve_providers(providers, device_id, fp16, trt_cache)
        self.graph_optimization = graph_optimization
        self.allow_spinning = bool(allow_spinning)
        key = (str(path.resolve()), path.stat().st_mtime_ns, path.stat().st_size, self.threads,
               repr(self.provider_list), graph_optimization, bool(allow_spinning))
        with _SESSIONS_LOCK:
            sess = _SESSIONS.get(key) if reuse else None
            if sess is None:
                sess = self._create_session(ort, allow_spinning)
                if reuse:
                    _SESSIONS[key] = sess
        self.session = sess
        self.input_names = [i.name for i in sess.get_inputs()]
        self.output_names = [o.name for o in sess.get_outputs()]
        self._input_types = {i.name: _ORT_TYPES.get(i.type) for i in sess.get_inputs()}
        on_gpu = any(p[0] != 'CPUExecutionProvider' for p in self.provider_list)
        self.io_binding = on_gpu if io_binding == 'auto' else bool(io_binding)
        self._device = ('cuda', device_id) if on_gpu else ('cpu', 0)
        self._out_shapes: dict[tuple, dict[str, tuple[tuple[int, ...], Any]]] = {}

    def _resolve_providers(self, providers, device_id, fp16, trt_cache):
        have = set(self._ort.get_available_providers())
        if providers == 'auto':
            wanted = ['cuda', 'cpu'] if 'CUDAExecutionProvider' in have else ['cpu']
        else:
            wanted = [providers] if isinstance(providers, str) else list(providers)
        out = []
        for p in wanted:
            full = ORT_PROVIDERS.get(p, p)
            if full not in have:
                raise BackendError('onnxruntime', f'execution provider {p!r} is not present in '
                                   f'this onnxruntime build (it has {sorted(have)}); install '
                                   'onnxruntime-gpu for CUDA/TensorRT')
            opts: dict[str, Any] = {}
            if full == 'CUDAExecutionProvider':
                opts = {'device_id': device_id}
            elif full == 'TensorrtExecutionProvider':
                cache = Path(trt_cache) if trt_cache else default_engines_dir() / 'ort_trt'
                opts = {'device_id': device_id, 'trt_fp16_enable': bool(fp16),
                        'trt_engine_cache_enable': True, 'trt_engine_cache_path': str(cache)}
            out.append((full, opts))
        names = [p[0] for p in out]
        if 'TensorrtExecutionProvider' in names and 'CUDAExecutionProvider' not in names \
                and 'CUDAExecutionProvider' in have:  # for what TensorRT does not take
            out.insert(names.index('TensorrtExecutionProvider') + 1,
                       ('CUDAExecutionProvider', {'device_id': device_id}))
        if not any(p[0] == 'CPUExecutionProvider' for p in out):
            out.append(('CPUExecutionProvider', {}))  # for operators the others lack
        return out

    def _create_session(self, ort, allow_spinning: bool):
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {
            'disable': ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            'extended': ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[self.graph_optimization]
        so.enable_cpu_mem_arena = True
        so.enable_mem_pattern = True
        so.enable_mem_reuse = True
        so.add_session_config_entry('session.intra_op.allow_spinning',
                                    '1' if allow_spinning else '0')
        so.log_severity_level = 3  # errors only
        names = [p[0] for p in self.provider_list]
        opts = [p[1] for p in self.provider_list]
        try:
            return ort.InferenceSession(str(self.path), sess_options=so, providers=names,
                                        provider_options=opts)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError('onnxruntime', f'cannot load {self.path}: {exc}') from exc

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def describe(self) -> str:
        prov = '+'.join(p.replace('ExecutionProvider', '') for p in self.providers)
        io = ', io binding' if self.io_binding else ''
        spin = ', spinning' if self.allow_spinning else ''
        return (f'onnxruntime {self._ort.__version__} ({prov}), {self.threads} threads{spin}, '
                f'graph optimization {self.graph_optimization}{io}')

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_inputs(inputs)
        feeds = {}
        for n in self.input_names:
            x, want = np.asarray(inputs[n]), self._input_types.get(n)
            feeds[n] = np.ascontiguousarray(x, dtype=want) if want is not None and \
                x.dtype != want else _as_float32(x)
        if not self.io_binding:
            outs = self.session.run(self.output_names, feeds)
            return dict(zip(self.output_names, outs))
        return self._run_bound(feeds)

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        io = self.session.io_binding()
        dev, dev_id = self._device
        for n, x in feeds.items():
            if dev == 'cpu':
                io.bind_cpu_input(n, x)
            else:
                io.bind_ortvalue_input(n, self._ort.OrtValue.ortvalue_from_numpy(x, dev, dev_id))
        sig = tuple((n, x.shape) for n, x in feeds.items())
        shapes = self._out_shapes.get(sig)
        results: dict[str, np.ndarray] = {}
        for n in self.output_names:
            if dev == 'cpu' and shapes is not None:
                shape, dtype = shapes[n]
                buf = np.empty(shape, dtype)
                io.bind_output(n, 'cpu', 0, dtype, buf.shape, buf.ctypes.data)
                results[n] = buf
            else:  # first call for this input shape, or a GPU output: let onnxruntime allocate
                io.bind_output(n, dev, dev_id)
        self.session.run_with_iobinding(io)
        if len(results) == len(self.output_names):
            return results
        outs = io.copy_outputs_to_cpu()
        self._out_shapes[sig] = {n: (o.shape, o.dtype) for n, o in zip(self.output_names, outs)}
        return dict(zip(self.output_names, outs))

    def close(self) -> None:
        self.session = None


# ----------------------------------------------------------------------------------------------
# tensorrt
# ----------------------------------------------------------------------------------------------

def default_engines_dir() -> Path:
    """Where exported ONNX files and engines go: ``$SGDFUSE_ENGINES``, else ``engines/`` of a
    source checkout, else ``~/.cache/sgdfuse_ros/engines``."""
    env = os.environ.get('SGDFUSE_ENGINES')
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / 'engines'
    if checkout.is_dir() and os.access(checkout, os.W_OK):
        return checkout
    cache = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache'))
    return cache / 'sgdfuse_ros' / 'engines'


def import_tensorrt():
    """The ``tensorrt`` module, or :class:`BackendError` when it is not installed."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendError('tensorrt', 'TensorRT is not installed (pip install '
                           '"sgdfuse_ros[tensorrt]" on a machine with an NVIDIA GPU and driver; '
                           f'import failed: {exc})') from exc
    return tensorrt


def _cuda_device(device: int | str):
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
        _reject_unknown('tensorrt', unused)
        if precision is None:
            precision = 'fp32' if enable_fp16 is False else 'fp16'
        if precision not in engine_cache.PRECISIONS:
            raise ValueError(f'precision must be one of {engine_cache.PRECISIONS}, got '
                             f'{precision!r}')
        if onnx_path is None and engine_file_path is None:
            raise ValueError('tensorrt: need onnx_path or engine_file_path')
        trt = import_tensorrt()
        torch, dev = _cuda_device(device)
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
        self._onnx_sha256 = engine_cache.sha256_file(self.onnx_path)
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
                meta.get('engine_sha256') != engine_cache.sha256_file(path):
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
        outs = self.run_tensors({n: _as_float32(x) for n, x in inputs.items()})
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


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

def _reject_unknown(backend: str, unused: Mapping[str, Any]) -> None:
    if unused:
        raise TypeError(f'{backend}: unknown options {sorted(unused)}')


#: name -> backend class. Register more with :func:`register_backend`.
BACKENDS: dict[str, type[Backend]] = {
    'torch': TorchBackend,
    'onnxruntime': OrtBackend,
    'tensorrt': TensorRTBackend,
}


def register_backend(name: str, cls: type[Backend]) -> None:
    BACKENDS[name] = cls


def backend_names() -> list[str]:
    return list(BACKENDS)


def unavailable_reason(name: str) -> str | None:
    """Why a backend cannot run here (cheap: imports only, builds nothing), or None."""
    if name not in BACKENDS:
        return f'unknown backend {name!r}; choose from {", ".join(BACKENDS)}'
    try:
        if name == 'torch':
            import torch  # noqa: F401
        elif name == 'onnxruntime':
            _import_onnxruntime()
        elif name == 'tensorrt':
            import_tensorrt()
            _cuda_device(0)
    except BackendError as exc:
        return exc.reason
    except ImportError as exc:
        return str(exc)
    return None


def default_backend() -> str:
    """``tensorrt`` where it can run (a CUDA GPU with TensorRT), else ``onnxruntime`` (the
    embedded CPU default), else ``torch``."""
    for name in ('tensorrt', 'onnxruntime'):
        if unavailable_reason(name) is None:
            return name
    return 'torch'


def build_backend(name: str, *, onnx_path: str | os.PathLike | None = None, module=None,
                  input_names: Sequence[str] | None = None,
                  output_names: Sequence[str] | None = None, **options) -> Backend:
    """Build a backend by name. ``torch`` needs ``module`` (+ ``input_names``/``output_names``);
    the others need ``onnx_path``. ``options`` go to the backend's constructor."""
    if name == 'auto':
        name = default_backend()
    if name not in BACKENDS:
        raise ValueError(f'unknown backend {name!r}; choose from auto, {", ".join(BACKENDS)}')
    cls = BACKENDS[name]
    if cls.source == 'module':
        if module is None:
            raise ValueError(f'{name}: needs a torch module')
        if input_names is None or output_names is None:
            raise ValueError(f'{name}: needs input_names and output_names')
        return cls(module, input_names, output_names, **options)
    if onnx_path is None and not options.get('engine_file_path'):
        raise ValueError(f'{name}: needs onnx_path')
    return cls(onnx_path, **options)


def build_with_fallback(name: str, build: Callable[[str], Backend], *,
                        fallback: str | None = DEFAULT_FALLBACK,
                        warn: Callable[[str], None] | None = None) -> Backend:
    """``build(name)``, or ``build(fallback)`` when the first raises :class:`BackendError`.

    ``build`` maps a backend name to a built backend (it carries the model and the options);
    ``warn`` receives one line naming the failure and the fallback (default: the log).
    """
    try:
        return build(name)
    except BackendError as exc:
        if not fallback or fallback == name:
            raise
        (warn or LOG.warning)(f'{exc}; falling back to {fallback!r}')
        return build(fallback)
