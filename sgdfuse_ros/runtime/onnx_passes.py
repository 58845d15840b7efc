"""Graph passes applied to fresh ONNX exports (those that measured faster), and the shape probe
they use where static shape inference cannot tell.

* :func:`fuse_pixel_unshuffle`: the reshape/transpose chain PyTorch emits for
  ``pixel_unshuffle`` becomes one ``SpaceToDepth`` (plus a channel ``Gather`` for several
  channels): one pass over the full-resolution input instead of three.

A pass takes the model (changed in place) and an optional ``probe(names) -> {name: shape}``, and
returns how many places it changed. :data:`GRAPH_PASSES` names them for
:attr:`sgdfuse_ros.models.export_spec.ExportSpec.passes`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np


def const_value(producers: dict, name: str, initializers: dict | None = None):
    from onnx import numpy_helper

    if initializers and name in initializers:
        return numpy_helper.to_array(initializers[name])
    node = producers.get(name)
    if node is None or node.op_type != 'Constant':
        return None
    for a in node.attribute:
        if a.name == 'value':
            return numpy_helper.to_array(a.t)
    return None


def fuse_pixel_unshuffle(model, probe: Callable[[list[str]], dict] | None = None) -> int:
    """Replace each ``pixel_unshuffle`` (the exporter's Unsqueeze/Reshape/Transpose/Reshape/
    Squeeze chain around a ``[0, 1, 3, 5, 2, 4]`` transpose) by one ``SpaceToDepth`` node. For
    one channel the two order their outputs identically; for ``C`` channels SpaceToDepth gives
    ``(i, j, c)`` where pixel_unshuffle gives ``(c, i, j)``, so a ``Gather`` over the channels
    (at the reduced resolution) restores the order. Returns the number of chains replaced; the
    graph is changed in place. ``probe(names)`` returns the actual shapes of intermediate
    tensors (from one run), for channel counts that static shape inference leaves unknown."""
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    graph = model.graph
    try:
        inferred = shape_inference.infer_shapes(model)
        infos = {v.name: v for v in list(inferred.graph.value_info) + list(graph.input)}
    except Exception:  # shape inference is best effort
        infos = {v.name: v for v in graph.input}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    inits = {i.name: i for i in graph.initializer}

    def only_consumer(t: str):
        c = consumers.get(t, [])
        return c[0] if len(c) == 1 and t not in outputs else None

    probed: dict[str, tuple] = {}

    def channels(t: str) -> int | None:
        info = infos.get(t)
        dims = info.type.tensor_type.shape.dim if info is not None else []
        if len(dims) == 4 and dims[1].HasField('dim_value'):
            return dims[1].dim_value
        if probe is not None and t not in probed:
            probed.update(probe([t]))
        shape = probed.get(t)
        return int(shape[1]) if shape is not None and len(shape) == 4 else None

    replaced, remove = 0, set()
    new_nodes: dict[int, Any] = {}
    for tr in graph.node:
        if tr.op_type != 'Transpose':
            continue
        perm = [list(a.ints) for a in tr.attribute if a.name == 'perm']
        if perm != [[0, 1, 3, 5, 2, 4]]:
            continue
        chain_back, t = [], tr.input[0]
        while True:  # Reshape/Unsqueeze nodes back to the source tensor
            p = producers.get(t)
            if p is None or p.op_type not in ('Reshape', 'Unsqueeze') or \
                    only_consumer(p.output[0]) is None:
                break
            chain_back.append(p)
            t = p.input[0]
        source = t
        chain_fwd, t = [], tr.output[0]
        while True:  # Reshape/Squeeze nodes forward to the unshuffled tensor
            c = only_consumer(t)
            if c is None or c.op_type not in ('Reshape', 'Squeeze'):
                break
            chain_fwd.append(c)
            t = c.output[0]
        target = t
        in_c = channels(source)
        if not chain_back or not chain_fwd or not in_c:
            continue
        out_c = channels(target)
        s = math.isqrt(out_c // in_c) if out_c and out_c % in_c == 0 else 0
        shapes = [const_value(producers, n.input[1], inits) for n in chain_back
                  if n.op_type == 'Reshape']
        if s < 2 or s * s * in_c != out_c or not any(v is not None and s in v.tolist()
                                                      for v in shapes):
            continue
        first = min(list(graph.node).index(n) for n in chain_back)
        if in_c == 1:
            new_nodes[first] = [helper.make_node('SpaceToDepth', [source], [target], blocksize=s,
                                                 name=f'{tr.name}/space_to_depth')]
        else:
            s2d, idx = f'{tr.name}/space_to_depth_out', f'{tr.name}/channel_order'
            order = np.array([(k % (s * s)) * in_c + k // (s * s) for k in range(out_c)],
                             np.int64)
            graph.initializer.append(numpy_helper.from_array(order, idx))
            new_nodes[first] = [
                helper.make_node('SpaceToDepth', [source], [s2d], blocksize=s,
                                 name=f'{tr.name}/space_to_depth'),
                helper.make_node('Gather', [s2d, idx], [target], axis=1,
                                 name=f'{tr.name}/channel_order')]
        remove.update(id(n) for n in chain_back + [tr] + chain_fwd)
        replaced += 1
    if replaced:
        kept = []
        for i, n in enumerate(graph.node):
            if i in new_nodes:
                kept.extend(new_nodes[i])
            if id(n) not in remove:
                kept.append(n)
        del graph.node[:]
        graph.node.extend(kept)
        drop_dead_nodes(model)
        onnx.checker.check_model(model)
    return replaced


def drop_dead_nodes(model) -> None:
    """Remove nodes (e.g. orphaned Constants) whose outputs nothing uses."""
    graph = model.graph
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        ids = {id(n) for n in dead}
        kept = [n for n in graph.node if id(n) not in ids]
        del graph.node[:]
        graph.node.extend(kept)


def probe_shapes(model, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, tuple]:
    """Actual shapes of intermediate tensors ``names``: one onnxruntime run of a copy of
    ``model`` that outputs them (graph optimizations off, so the names survive)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for n in names:
        if n not in have:
            probe.graph.output.append(onnx.ValueInfoProto(name=n))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), so,
                                    providers=['CPUExecutionProvider'])
        wanted = list(names)
        outs = sess.run(wanted, {k: v for k, v in feeds.items()
                                 if k in {i.name for i in sess.get_inputs()}})
    except Exception:  # a probe is best effort: the pass then skips the chain
        return {}
    return {n: tuple(o.shape) for n, o in zip(wanted, outs)}


GRAPH_PASSES: dict[str, Callable[..., int]] = {
    'fuse_pixel_unshuffle': fuse_pixel_unshuffle,
}
