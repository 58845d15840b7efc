"""One call for the fusion methods and mask providers: a network's backend by name, from the ONNX
graph of its weights (shipped, or exported ahead of time) or exported on first use.

::

    from sgdfuse_ros.models.stage1 import Stage1WithMaps, stage1_spec
    from sgdfuse_ros.runtime import load_network

    be = load_network('onnxruntime', module=Stage1WithMaps(model), spec=stage1_spec(model),
                      digest=sha256_file(weights), source=str(weights), fallback='onnxruntime')
    f1 = be.run({'ir': ir[None, None], 'vis': vis[None, None]})['f1']

``torch`` runs the module itself; ``onnxruntime`` and ``tensorrt`` run its ONNX export, found in
(or written to) the engines folder by the weights' hash (:func:`.export.ensure_onnx`).

:func:`load_graph` is the same without a module in hand: it runs a graph that exists for the
weights (the one shipped beside them, or one in the engines folder) and needs PyTorch only to
export a missing graph or to run the ``torch`` backend, so the runtime install (no PyTorch)
runs the shipped networks::

    be, sidecar = load_graph('onnxruntime', pattern='stage1', digest=sha256_file(weights),
                             source=str(weights), shipped=weights, exportable=load_module)
    multiple = sidecar['multiple']
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable

from sgdfuse_ros.models.export_spec import ExportSpec
from .backends import BACKENDS, Backend, build_backend, build_with_fallback, default_backend
from .base import LOG, default_engines_dir
from .export import ensure_onnx, find_graph, read_onnx_sidecar
from .extras import RUNTIME_INSTALL, TorchRequired, require_torch, torch_available


def _accepted(cls: type[Backend], options: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in options.items() if k in params}


def backend_options(name: str, device: str | None, threads: int | None) -> dict[str, Any]:
    """``device`` / ``threads`` in each backend's own terms."""
    dev = str(device) if device else 'cpu'
    on_cuda = dev.startswith('cuda')
    if name == 'torch':  # its CPU threads are process-wide: see runtime.set_threads
        return {'device': dev}
    if name == 'onnxruntime':
        opts: dict[str, Any] = {'providers': ['cuda'] if on_cuda else ['cpu']}
        if threads:
            opts['threads'] = threads
        if on_cuda and ':' in dev:
            opts['device_id'] = int(dev.split(':')[1])
        return opts
    if name == 'tensorrt':
        return {'device': dev if on_cuda else 0}
    return {}


def load_network(backend: str | None, *, module, spec: ExportSpec, digest: str, source: str,
                 device: str | None = None, threads: int | None = None,
                 engines_dir: str | os.PathLike | None = None, fallback: str | None = None,
                 warn: Callable[[str], None] | None = None, **options) -> Backend:
    """Build ``backend`` (``torch``, ``onnxruntime``, ``tensorrt``, ``auto``/None) for a network.

    ``module``: the PyTorch network (eval mode). ``spec``: how it exports (the network's own,
    e.g. :func:`sgdfuse_ros.models.stage1.stage1_spec`). ``digest`` / ``source``: its weights'
    SHA-256 and origin (keys the ONNX file). ``device`` / ``threads`` are translated for each
    backend (``threads``: ONNX Runtime's per-session pool; PyTorch keeps the process-wide
    setting of :func:`sgdfuse_ros.runtime.set_threads`); ``options``
    go to the backend (e.g. ``precision``, ``force_engine_update`` for TensorRT). When the
    backend cannot load and ``fallback`` names another, that one is built instead (with the
    options it understands) and ``warn`` (default: the log) says so.
    """
    name = resolve_backend(backend)
    if name not in BACKENDS:
        raise ValueError(f'unknown backend {name!r}; choose from auto, {", ".join(BACKENDS)}')
    if fallback == 'torch' and not torch_available():
        fallback = None

    def build(which: str) -> Backend:
        cls = BACKENDS[which]
        opts = backend_options(which, device, threads)
        opts.update(options if which == name else _accepted(cls, options))
        if cls.source == 'module':
            require_torch(f'the {which!r} backend')
            return build_backend(which, module=module, input_names=spec.input_names,
                                 output_names=spec.output_names, **opts)
        path = ensure_onnx(module, spec, digest=digest, source=source, out_dir=engines_dir,
                           log=LOG.info)
        if which == 'tensorrt':
            opts.setdefault('multiple', spec.multiple)
            opts.setdefault('model_name', spec.name)
            if engines_dir is not None:
                opts.setdefault('engines_dir', engines_dir)
        return build_backend(which, onnx_path=path, **opts)

    be = build_with_fallback(name, build, fallback=fallback, warn=warn)
    LOG.info('%s: %s', spec.name, be.describe())
    return be


def resolve_backend(backend: str | None) -> str:
    """The backend ``auto`` (or None) means here: TensorRT where it runs, else ONNX Runtime,
    else PyTorch; never PyTorch where it is not installed (a ``ModuleNotFoundError`` naming the
    runtime install instead). A named backend is returned as it is."""
    if backend not in (None, 'auto'):
        return backend
    name = default_backend()
    if name == 'torch' and not torch_available():  # an ImportError: commands print one line
        raise ModuleNotFoundError('the networks need an inference runtime and none is installed '
                                  f'(neither onnxruntime nor torch): {RUNTIME_INSTALL}',
                                  name='onnxruntime')
    return name


def auto_fallback(backend: str | None) -> str | None:
    """The fallback of a method built with backend ``auto``: PyTorch where it is installed,
    else ONNX Runtime unless that is what failed (a runtime install never falls back to a
    PyTorch it does not have)."""
    name = resolve_backend(backend)
    if torch_available():
        return 'torch'
    return None if name == 'onnxruntime' else 'onnxruntime'


def load_graph(backend: str | None, *, pattern: str, digest: str, source: str,
               shipped: str | os.PathLike | None = None,
               accept: Callable[[dict], bool] | None = None,
               exportable: Callable[[], tuple[Any, ExportSpec]] | None = None,
               export_command: str = 'sgdfuse export --onnx',
               device: str | None = None, threads: int | None = None,
               engines_dir: str | os.PathLike | None = None, fallback: str | None = None,
               warn: Callable[[str], None] | None = None, graph: str = 'float', **options
               ) -> tuple[Backend, dict | None]:
    """Build ``backend`` for a network given by its weights' ``digest``, from an ONNX graph
    that exists for them, exporting one only when none does.

    Where the graph comes from, in order: ``shipped`` (the weights file whose graph lies beside
    it, :func:`.export.shipped_graph_paths`), then ``<pattern>_<hash12>.onnx`` in the engines
    folder (``pattern``: a glob of the graph's name), each with a sidecar naming these weights
    and taken by ``accept(sidecar)``; then an export now of ``exportable()`` (``(module,
    spec)``, needs PyTorch) into the engines folder. Where PyTorch is installed a graph from
    an older exporter is redone; where it is not, any complete one is used. No graph and no
    PyTorch: :class:`~.extras.TorchRequired` (an ``ImportError``) saying to export the graph
    on a machine with PyTorch (``export_command``, the command that writes it). ``torch``
    builds ``exportable()``'s module (needs PyTorch).
    ``graph``: ``float`` (the export) or ``int8`` (its quantization, :mod:`.quantize`: made
    ahead of time, never on first use; run on ``onnxruntime`` only, with no fallback).
    The other arguments are those of :func:`load_network`. Returns the backend and the
    sidecar of the graph it runs (None for ``torch``).
    """
    from .quantize import check_kind

    name = resolve_backend(backend)
    if name not in BACKENDS:
        raise ValueError(f'unknown backend {name!r}; choose from auto, {", ".join(BACKENDS)}')
    kind = check_kind(graph)  # the name `graph` is the finder below
    if kind != 'float':
        if name != 'onnxruntime':
            raise ValueError(f"{pattern}: graph='{kind}' runs on onnxruntime (the CPU), not on "
                             f"{name}; use graph='float' there")
        exportable, fallback = None, None
    engines = Path(engines_dir) if engines_dir is not None else default_engines_dir()
    found: dict[str, Any] = {}

    def graph() -> tuple[Path, dict]:
        if 'path' in found:
            return found['path'], found['sidecar']
        can_export = exportable is not None and torch_available()
        path, sidecar, looked = find_graph(digest, pattern=pattern, dirs=[engines],
                                           shipped=shipped, accept=accept, current=can_export,
                                           kind=kind)
        if path is None and kind != 'float':
            raise FileNotFoundError(
                f'{pattern}: no {kind} graph of {source} (sha256 {digest[:12]}) was found '
                f'(looked for {looked}); make it with `sgdfuse export --onnx --shipped '
                f'--quantize {kind}`, or use graph=float')
        if path is None:
            if not can_export:
                raise TorchRequired(
                    f'{pattern}: no ONNX graph of {source} (sha256 {digest[:12]}) was found '
                    f'(looked for {looked}), and exporting one',
                    f'or export it on a machine with PyTorch (`{export_command}`) and copy the '
                    f'files into {engines}')
            module, spec = exportable()
            path = ensure_onnx(module, spec, digest=digest, source=source, out_dir=engines,
                               log=LOG.info)
            sidecar = read_onnx_sidecar(path.with_suffix('.json'))
        found.update(path=path, sidecar=sidecar)
        return path, sidecar

    def build(which: str) -> Backend:
        cls = BACKENDS[which]
        opts = backend_options(which, device, threads)
        opts.update(options if which == name else _accepted(cls, options))
        if cls.source == 'module':
            require_torch(f'the {which!r} backend')
            if exportable is None:
                raise ValueError(f'{pattern}: backend {which!r} needs the network itself')
            module, spec = exportable()
            return build_backend(which, module=module, input_names=spec.input_names,
                                 output_names=spec.output_names, **opts)
        path, sidecar = graph()
        if which == 'tensorrt':
            opts.setdefault('multiple', int(sidecar.get('multiple', 1)))
            opts.setdefault('model_name', sidecar.get('model', path.stem))
            if engines_dir is not None:
                opts.setdefault('engines_dir', engines_dir)
        return build_backend(which, onnx_path=path, **opts)

    if fallback == 'torch' and not torch_available():
        fallback = None
    be = build_with_fallback(name, build, fallback=fallback, warn=warn)
    sidecar = found.get('sidecar') if BACKENDS[be.name].source != 'module' else None
    LOG.info('%s: %s (%s)', pattern, be.describe(),
             found['path'] if sidecar is not None else 'the PyTorch module')
    return be, sidecar


#: Options a fusion method passes through to :func:`load_network` (the rest are its own).
RUNTIME_OPTIONS = ('fallback', 'engines_dir', 'precision', 'enable_fp16', 'force_engine_update',
                   'engine_file_path', 'providers', 'io_binding', 'graph_optimization',
                   'allow_spinning')
