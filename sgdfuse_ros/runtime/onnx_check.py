"""Static checks that an exported ONNX graph will build as a TensorRT 10 engine.

TensorRT cannot be installed on every machine (CI included), so the graphs are checked against
what its ONNX parser accepts without it: the opset range, operators from a list of those the
parser supports (written for this package from the onnx-tensorrt support matrix of TensorRT 10),
no dynamic control flow (``Loop``, ``If``, ``Scan``: TensorRT accepts some of them, but they
defeat layer fusion and we never need them), no custom domains, convolution weights that are
constants, and float32 image inputs.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The opsets TensorRT 10.0's ONNX parser supports, and the floor this package exports at.
MIN_OPSET = 17
MAX_OPSET = 20

#: ONNX operators (default domain) the TensorRT 10 parser supports and our models may use.
TENSORRT_OPS = frozenset("""
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
    CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
    Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalMaxPool
    Greater GreaterOrEqual GridSample GroupNormalization HardSigmoid HardSwish Identity
    InstanceNormalization LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax LRN
    MatMul Max MaxPool Mean Min Mish Mul Neg Not OneHot Or Pad Pow PRelu QuantizeLinear Range
    Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
    ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize Round ScatterElements ScatterND
    Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth
    Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze
    Where Xor
""".split())

#: Dynamic control flow: refused in our graphs.
CONTROL_FLOW_OPS = frozenset({'Loop', 'If', 'Scan', 'SequenceConstruct', 'SequenceAt',
                              'SequenceInsert', 'SplitToSequence', 'ConcatFromSequence'})

#: Resize modes the parser accepts.
_RESIZE_MODES = {b'nearest', b'linear', b'cubic'}


def _attr(node, name):
    for a in node.attribute:
        if a.name == name:
            return a
    return None


def tensorrt_problems(model, *, min_opset: int = MIN_OPSET, max_opset: int = MAX_OPSET
                      ) -> list[str]:
    """Reasons the graph would not build as a TensorRT 10 engine (empty list: none found).

    ``model``: an ``onnx.ModelProto`` or a path.
    """
    import onnx

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(str(model))
    problems: list[str] = []
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        problems.append(f'invalid ONNX model: {str(exc).splitlines()[0]}')

    default = [o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')]
    if not default:
        problems.append('no default-domain opset import')
    elif not min_opset <= default[0] <= max_opset:
        problems.append(f'opset {default[0]} outside the supported range '
                        f'{min_opset}..{max_opset}')
    others = sorted(o.domain for o in model.opset_import if o.domain not in ('', 'ai.onnx'))
    if others:
        problems.append(f'custom operator domains {others} (TensorRT needs plugins for them)')
    if model.functions:
        problems.append(f'{len(model.functions)} local functions (inline them before export)')

    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == 'Constant' for o in n.output}
    unsupported: dict[str, int] = {}
    for node in model.graph.node:
        op = node.op_type
        if node.domain not in ('', 'ai.onnx'):
            unsupported[f'{node.domain}::{op}'] = unsupported.get(f'{node.domain}::{op}', 0) + 1
            continue
        if op in CONTROL_FLOW_OPS:
            problems.append(f'dynamic control flow: {op} node {node.name or node.output[0]!r}')
            continue
        if op not in TENSORRT_OPS:
            unsupported[op] = unsupported.get(op, 0) + 1
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):
            problems.append(f'{op} node {node.name!r} holds a subgraph')
        if op in ('Conv', 'ConvTranspose') and len(node.input) > 1 \
                and node.input[1] not in constants:
            problems.append(f'{op} node {node.name!r}: weights are not a constant '
                            f'({node.input[1]!r})')
        if op == 'Resize':
            mode = _attr(node, 'mode')
            if mode is not None and mode.s not in _RESIZE_MODES:
                problems.append(f'Resize node {node.name!r}: mode {mode.s.decode()!r}')
    for op, n in sorted(unsupported.items()):
        problems.append(f"operator {op} ({n} nodes) is not supported by TensorRT's ONNX parser")

    for inp in model.graph.input:
        if inp.name in constants:
            continue
        t = inp.type.tensor_type
        if t.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                               onnx.TensorProto.INT32, onnx.TensorProto.INT64,
                               onnx.TensorProto.BOOL):
            problems.append(f'input {inp.name!r} has element type '
                            f'{onnx.TensorProto.DataType.Name(t.elem_type)}')
    return problems


def op_histogram(model) -> dict[str, int]:
    """Operator -> node count of a model (or path), for reports."""
    import onnx

    if isinstance(model, (str, os.PathLike, Path)):
        model = onnx.load(str(model))
    hist: dict[str, int] = {}
    for node in model.graph.node:
        hist[node.op_type] = hist.get(node.op_type, 0) + 1
    return dict(sorted(hist.items(), key=lambda kv: -kv[1]))
