"""The ``onnxruntime`` backend: an ONNX file run by ONNX Runtime, tuned for small CPUs.

Sessions are shared: two backends of the same file with the same settings use one session (the
graph is optimized once), counted by reference, so a session is released when the last backend
using it is closed (or collected).
"""

from __future__ import annotations

import os
from pathlib import Path
import threading
from typing import Any, Callable, Mapping, Sequence
import weakref

import numpy as np

from .base import Backend, BackendError, as_float32, default_engines_dir, reject_unknown
from .threads import default_threads

#: onnxruntime type strings -> numpy dtypes of the inputs we feed.
_ORT_TYPES = {'tensor(float)': np.float32, 'tensor(float16)': np.float16,
              'tensor(double)': np.float64, 'tensor(int64)': np.int64,
              'tensor(int32)': np.int32, 'tensor(bool)': np.bool_, 'tensor(uint8)': np.uint8}

#: Short provider names -> onnxruntime execution providers.
ORT_PROVIDERS = {
    'cpu': 'CPUExecutionProvider',
    'cuda': 'CUDAExecutionProvider',
    'tensorrt': 'TensorrtExecutionProvider',
}
GRAPH_OPTIMIZATION = ('disable', 'basic', 'extended', 'all')

class SessionCache:
    """Sessions shared by backends, counted by reference: :meth:`acquire` creates or reuses
    the session of a key, :meth:`release` drops one user and forgets the session with its last
    one, so that nothing here keeps a session alive that no backend uses."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict[tuple, list] = {}  # key -> [session, users]

    def acquire(self, key: tuple, create: Callable[[], Any]) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = [create(), 0]
            entry[1] += 1
            return entry[0]

    def release(self, key: tuple, session: Any) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is session:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, session: Any) -> bool:
        with self._lock:
            return any(e[0] is session for e in self._entries.values())


SESSIONS = SessionCache()


def clear_session_cache() -> None:
    """Forget the shared sessions: backends built from now on get new ones (those built
    before keep theirs)."""
    SESSIONS.clear()


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError('onnxruntime', 'the onnxruntime package is not installed '
                           '(pip install "sgdfuse_ros[onnx]")') from exc
    return onnxruntime


class OrtBackend(Backend):
    """An ONNX file run by ONNX Runtime with session options tuned for small CPUs.

    Options:

    ``threads``            intra-op threads; default: :func:`..threads.default_threads`
                           (the value of ``set_threads``, else the cores this process may use).
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
    ``reuse``              share one session per (file, options) across backends (default on;
                           :meth:`close` releases this backend's share).
    ``fp16`` / ``trt_cache``  TensorRT execution provider: FP16 and its engine cache folder.

    Sessions are created once and reused: the ONNX graph is optimized at load, not per call.
    When the input shapes change (a frame of another size), that run shrinks the CPU memory
    arena afterwards, so memory taken by a large frame goes back once smaller ones follow
    (steady streams, one shape, never pay for it).
    """

    name = 'onnxruntime'

    def __init__(self, onnx_path: str | os.PathLike, *, threads: int | None = None,
                 providers: str | Sequence[str] = 'auto', graph_optimization: str = 'all',
                 io_binding: bool | str = 'auto', allow_spinning: bool = False,
                 reuse: bool = True, device_id: int = 0, fp16: bool = True,
                 trt_cache: str | os.PathLike | None = None, **unused):
        reject_unknown('onnxruntime', unused)
        ort = import_onnxruntime()
        self._ort = ort
        path = Path(onnx_path)
        if not path.is_file():
            raise BackendError('onnxruntime', f'no ONNX file {path} (run `sgdfuse export --onnx`)')
        if graph_optimization not in GRAPH_OPTIMIZATION:
            raise ValueError(f'graph_optimization must be one of {GRAPH_OPTIMIZATION}, got '
                             f'{graph_optimization!r}')
        self.path = path
        self.threads = int(threads) if threads else default_threads()
        self.provider_list = self._resolve_providers(providers, device_id, fp16, trt_cache)
        self.graph_optimization = graph_optimization
        self.allow_spinning = bool(allow_spinning)
        key = (str(path.resolve()), path.stat().st_mtime_ns, path.stat().st_size, self.threads,
               repr(self.provider_list), graph_optimization, bool(allow_spinning))
        self._release = None
        if reuse:
            sess = SESSIONS.acquire(key, lambda: self._create_session(ort, allow_spinning))
            self._release = weakref.finalize(self, SESSIONS.release, key, sess)
        else:
            sess = self._create_session(ort, allow_spinning)
        self.session = sess
        self._providers = sess.get_providers()
        self.input_names = [i.name for i in sess.get_inputs()]
        self.output_names = [o.name for o in sess.get_outputs()]
        self._input_types = {i.name: _ORT_TYPES.get(i.type) for i in sess.get_inputs()}
        on_gpu = any(p[0] != 'CPUExecutionProvider' for p in self.provider_list)
        self.io_binding = on_gpu if io_binding == 'auto' else bool(io_binding)
        self._device = ('cuda', device_id) if on_gpu else ('cpu', 0)
        self._out_shapes: dict[tuple, dict[str, tuple[tuple[int, ...], Any]]] = {}
        self._last_shapes: tuple | None = None
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry('memory.enable_memory_arena_shrinkage', 'cpu:0')

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
        """The execution providers the session runs on, in order of preference."""
        return list(self._providers)

    def describe(self) -> str:
        prov = '+'.join(p.replace('ExecutionProvider', '') for p in self.providers)
        io = ', io binding' if self.io_binding else ''
        spin = ', spinning' if self.allow_spinning else ''
        return (f'onnxruntime {self._ort.__version__} ({prov}), {self.threads} threads{spin}, '
                f'graph optimization {self.graph_optimization}{io}')

    def summary(self) -> str:
        return f'onnxruntime ({"+".join(self.providers)}, {self.threads} threads)'

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.session is None:
            raise RuntimeError(f'onnxruntime: the backend of {self.path} is closed')
        self._check_inputs(inputs)
        feeds = {}
        for n in self.input_names:
            x, want = np.asarray(inputs[n]), self._input_types.get(n)
            feeds[n] = np.ascontiguousarray(x, dtype=want) if want is not None and \
                x.dtype != want else as_float32(x)
        shapes = tuple(x.shape for x in feeds.values())
        changed = self._last_shapes is not None and shapes != self._last_shapes
        self._last_shapes = shapes
        run_options = self._shrink if changed else None  # free what other shapes held
        if not self.io_binding:
            outs = self.session.run(self.output_names, feeds, run_options)
            return dict(zip(self.output_names, outs))
        return self._run_bound(feeds, run_options)

    def _run_bound(self, feeds: dict[str, np.ndarray], run_options=None
                   ) -> dict[str, np.ndarray]:
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
        self.session.run_with_iobinding(io, run_options)
        if len(results) == len(self.output_names):
            return results
        outs = io.copy_outputs_to_cpu()
        self._out_shapes[sig] = {n: (o.shape, o.dtype) for n, o in zip(self.output_names, outs)}
        return dict(zip(self.output_names, outs))

    def close(self) -> None:
        """Release the session: a shared one is freed with its last backend."""
        if self._release is not None:
            self._release()
        self.session = None
