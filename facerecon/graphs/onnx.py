"""Reader for ONNX models, rebuilt with TensorFlow ops so gradients reach the input.

An ONNX file is a protobuf graph of nodes that read and write named tensors, with the
weights as initializers. :func:`load_onnx` parses it (``onnx``'s protobuf reader, which runs
no code from the file) and checks it; the graph runs as a
:class:`facerecon.graphs.graph.Graph` over the convolutions of :mod:`facerecon.graphs.ops`,
in ONNX's channels-first layout. Every tensor of the graph can be read by name
(:meth:`OnnxGraph.tensor`), as a model's tap layers do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from facerecon.core.errors import FaceReconError
from facerecon.graphs import ops
from facerecon.graphs.graph import Graph, Node, fold_static

#: protobuf's own limit for one message; external data files are not read
MAX_BYTES = 2**31
FEED, CONST, TENSOR = "Input", "Initializer", "Tensor"
#: the name of the constant that stands for an omitted optional input
ABSENT = "<absent>"

Op = Callable[[Node, list[tf.Tensor]], Any]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _static(x: tf.Tensor, what: str, node: Node) -> np.ndarray:
    value = tf.get_static_value(x)
    if value is None:
        raise FaceReconError(f"node {node.name!r} ({node.op}): its {what} must be a constant")
    return np.asarray(value)


def _present(x: tf.Tensor | None) -> bool:
    return x is not None and not (x.shape.rank == 1 and x.shape[0] == 0)


def _opset(node: Node) -> int:
    return int(node.attr["_opset"])


def _axes(node: Node, args: list[tf.Tensor], index: int) -> list[int] | None:
    """The ``axes`` of a node: an attribute before some opset, the input ``index`` after."""
    if "axes" in node.attr:
        return [int(a) for a in node.attr["axes"]]
    if len(args) > index and _present(args[index]):
        return [int(a) for a in np.ravel(_static(args[index], "axes", node))]
    return None


def _binary(fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> Op:
    return lambda node, args: fn(args[0], args[1])


def _unary(fn: Callable[[tf.Tensor], tf.Tensor]) -> Op:
    return lambda node, args: fn(args[0])


def _variadic(fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> Op:
    def apply(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
        out = args[0]
        for other in args[1:]:
            out = fn(out, other)
        return out

    return apply


def _div(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    a, b = args
    return tf.truncatediv(a, b) if a.dtype.is_integer else tf.divide(a, b)


def _matmul(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    a, b = args
    # numpy's matmul: a 1-D operand is a row (left) or a column (right), dropped after
    out = tf.linalg.matmul(
        a[None] if a.shape.rank == 1 else a, b[:, None] if b.shape.rank == 1 else b
    )
    if a.shape.rank == 1:
        out = tf.squeeze(out, -2)
    if b.shape.rank == 1:
        out = tf.squeeze(out, -1)
    return out


def _gemm(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    a, b = args[0], args[1]
    out = float(node.attr.get("alpha", 1.0)) * tf.linalg.matmul(
        a,
        b,
        transpose_a=bool(node.attr.get("transA", 0)),
        transpose_b=bool(node.attr.get("transB", 0)),
    )
    if len(args) > 2 and _present(args[2]):
        out += float(node.attr.get("beta", 1.0)) * args[2]
    return out


def _softmax(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x = args[0]
    rank = x.shape.rank
    if _opset(node) >= 13:
        return tf.nn.softmax(x, axis=_axis(int(node.attr.get("axis", -1)), rank))
    # Before opset 13: over all axes from `axis` on, as one flattened axis.
    axis = _axis(int(node.attr.get("axis", 1)), rank)
    shape = tf.shape(x)
    flat = tf.reshape(x, tf.stack([tf.reduce_prod(shape[:axis]), tf.reduce_prod(shape[axis:])]))
    return tf.reshape(tf.nn.softmax(flat, axis=-1), shape)


def _clip(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x = args[0]
    low = node.attr.get("min")
    high = node.attr.get("max")
    if len(args) > 1 and _present(args[1]):
        low = args[1]
    if len(args) > 2 and _present(args[2]):
        high = args[2]
    if low is not None:
        x = tf.maximum(x, tf.cast(low, x.dtype))
    if high is not None:
        x = tf.minimum(x, tf.cast(high, x.dtype))
    return x


def _channel(v: tf.Tensor, rank: int) -> tf.Tensor:
    """A per-channel vector shaped to broadcast along axis 1 of a rank-``rank`` tensor."""
    return tf.reshape(v, [-1] + [1] * (rank - 2))


def _batch_norm(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x, scale, bias, mean, variance = args[:5]
    rank = x.shape.rank
    epsilon = float(node.attr.get("epsilon", 1e-5))
    factor = scale * tf.math.rsqrt(variance + epsilon)
    return (x - _channel(mean, rank)) * _channel(factor, rank) + _channel(bias, rank)


def _conv_pads(node: Node, x: tf.Tensor, kernel: Sequence[int]) -> list[tuple[int, int]]:
    auto = node.attr.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    strides = [int(s) for s in node.attr.get("strides", [1, 1])]
    dilations = [int(d) for d in node.attr.get("dilations", [1, 1])]
    if auto == "VALID":
        return [(0, 0), (0, 0)]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return ops.same_pads(x.shape[2:], strides, dilations, kernel, auto == "SAME_UPPER")
    pads = [int(p) for p in node.attr.get("pads", [0, 0, 0, 0])]
    return [(pads[0], pads[2]), (pads[1], pads[3])]


def _conv(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x, weights = args[0], args[1]
    out = ops.conv_nchw(
        x, weights, [int(s) for s in node.attr.get("strides", [1, 1])],
        [int(d) for d in node.attr.get("dilations", [1, 1])],
        _conv_pads(node, x, weights.shape[2:]), int(node.attr.get("group", 1)),
    )  # fmt: skip
    if len(args) > 2 and _present(args[2]):
        out += _channel(args[2], 4)
    return out


def _conv_transpose(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x, weights = args[0], args[1]
    pads = [int(p) for p in node.attr.get("pads", [0, 0, 0, 0])]
    out = ops.conv_transpose_nchw(
        x, weights, [int(s) for s in node.attr.get("strides", [1, 1])],
        [int(d) for d in node.attr.get("dilations", [1, 1])],
        [(pads[0], pads[2]), (pads[1], pads[3])],
        [int(p) for p in node.attr.get("output_padding", [0, 0])],
        int(node.attr.get("group", 1)),
    )  # fmt: skip
    if len(args) > 2 and _present(args[2]):
        out += _channel(args[2], 4)
    return out


def _pool(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x = ops.to_channels_last(args[0])
    kernel = [int(k) for k in node.attr["kernel_shape"]]
    strides = [int(s) for s in node.attr.get("strides", [1, 1])]
    (top, bottom), (left, right) = _conv_pads(node, args[0], kernel)
    padding = [[0, 0], [top, bottom], [left, right], [0, 0]]
    if node.op == "MaxPool":
        padded = tf.pad(x, padding, constant_values=float("-inf"))
        out = tf.nn.max_pool2d(padded, kernel, strides, "VALID")
    else:
        out = tf.nn.avg_pool2d(tf.pad(x, padding), kernel, strides, "VALID")
        if not node.attr.get("count_include_pad", 0) and (top or bottom or left or right):
            ones = tf.pad(tf.ones_like(x[..., :1]), padding)
            out = out / tf.nn.avg_pool2d(ones, kernel, strides, "VALID")
    return ops.to_channels_first(out)


def _global_pool(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    reduce = tf.reduce_mean if node.op == "GlobalAveragePool" else tf.reduce_max
    return reduce(args[0], axis=list(range(2, args[0].shape.rank)), keepdims=True)


def _reshape(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x = args[0]
    shape = [int(d) for d in np.ravel(_static(args[1], "shape", node))]
    if not node.attr.get("allowzero", 0):  # a 0 keeps the input's size on that axis
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    if None in shape:
        dynamic = tf.shape(x)
        shape = [dynamic[i] if d is None else d for i, d in enumerate(shape)]
    return tf.reshape(x, shape)


def _flatten(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x = args[0]
    axis = _axis(int(node.attr.get("axis", 1)), x.shape.rank)
    shape = tf.shape(x)
    return tf.reshape(x, tf.stack([tf.reduce_prod(shape[:axis]), tf.reduce_prod(shape[axis:])]))


def _transpose(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    perm = node.attr.get("perm")
    return tf.transpose(args[0], None if perm is None else [int(p) for p in perm])


def _concat(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    return tf.concat(args, axis=_axis(int(node.attr["axis"]), args[0].shape.rank))


def _squeeze(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    axes = _axes(node, args, 1)
    x = args[0]
    return tf.squeeze(x, None if axes is None else [_axis(a, x.shape.rank) for a in axes])


def _unsqueeze(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x = args[0]
    axes = _axes(node, args, 1) or []
    rank = x.shape.rank + len(axes)
    for axis in sorted(_axis(a, rank) for a in axes):
        x = tf.expand_dims(x, axis)
    return x


def _shape(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x = args[0]
    rank = x.shape.rank
    start = _axis(int(node.attr.get("start", 0)), rank)
    end = node.attr.get("end")
    end = None if end is None else _axis(int(end), rank)
    if x.shape.is_fully_defined():  # a constant keeps traced shapes static
        return tf.constant(x.shape.as_list()[start:end], tf.int64)
    return tf.shape(x, out_type=tf.int64)[start:end]


def _gather(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    data, indices = args
    axis = _axis(int(node.attr.get("axis", 0)), data.shape.rank)
    size = tf.shape(data, out_type=indices.dtype)[axis]
    return tf.gather(data, tf.where(indices < 0, indices + size, indices), axis=axis)


def _reduce(fn: Callable[..., tf.Tensor], axes_input: int) -> Op:
    def reduce(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
        axes = _axes(node, args, 1) if _opset(node) >= axes_input else node.attr.get("axes")
        x = args[0]
        if axes is not None and len(axes) == 0 and node.attr.get("noop_with_empty_axes", 0):
            return x
        axis = None if not axes else [_axis(int(a), x.shape.rank) for a in axes]
        return fn(x, axis=axis, keepdims=bool(node.attr.get("keepdims", 1)))

    return reduce


def _leaky_relu(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    return tf.nn.leaky_relu(args[0], alpha=float(node.attr.get("alpha", 0.01)))


def _cast(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    from onnx import helper

    return tf.cast(args[0], helper.tensor_dtype_to_np_dtype(int(node.attr["to"])))


def _constant(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    return tf.constant(node.attr["_value"])


def _split(node: Node, args: list[tf.Tensor]) -> tuple[tf.Tensor, ...]:
    x = args[0]
    axis = _axis(int(node.attr.get("axis", 0)), x.shape.rank)
    sizes = node.attr.get("split")
    if sizes is None and len(args) > 1 and _present(args[1]):
        sizes = np.ravel(_static(args[1], "split", node))
    if sizes is None:
        return tuple(tf.split(x, int(node.attr["_outputs"]), axis=axis))
    return tuple(tf.split(x, [int(s) for s in sizes], axis=axis))


OPS: dict[str, Op] = {
    TENSOR: _unary(tf.identity),
    "Identity": _unary(tf.identity),
    "Dropout": _unary(tf.identity),  # inference: the input as it is
    "Relu": _unary(tf.nn.relu),
    "Sigmoid": _unary(tf.sigmoid),
    "Tanh": _unary(tf.tanh),
    "Exp": _unary(tf.exp),
    "Sqrt": _unary(tf.sqrt),
    "Abs": _unary(tf.abs),
    "Neg": _unary(tf.negative),
    "Add": _binary(tf.add),
    "Sub": _binary(tf.subtract),
    "Mul": _binary(tf.multiply),
    "Div": _div,
    "Pow": _binary(tf.pow),
    "Max": _variadic(tf.maximum),
    "Min": _variadic(tf.minimum),
    "Sum": _variadic(tf.add),
    "PRelu": _binary(ops.prelu),
    "LeakyRelu": _leaky_relu,
    "Clip": _clip,
    "Softmax": _softmax,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "BatchNormalization": _batch_norm,
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Concat": _concat,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Shape": _shape,
    "Gather": _gather,
    "ReduceMean": _reduce(tf.reduce_mean, 18),
    "ReduceSum": _reduce(tf.reduce_sum, 13),
    "ReduceMax": _reduce(tf.reduce_max, 18),
    "Cast": _cast,
    "Constant": _constant,
    "Split": _split,
}
#: attributes whose other values the ops above do not implement
_REFUSED = {
    "ceil_mode": (1,),
    "storage_order": (1,),
    "training_mode": (1,),
}


class OnnxGraph(Graph):
    """An ONNX graph: nodes by name, initializers by tensor name."""

    reader = "ONNX"
    noun = "node"
    feed_op = FEED
    const_op = CONST
    supported = frozenset({FEED, CONST, *OPS})

    #: tensor name -> (producing node, output index), set by :func:`load_onnx`
    producers: dict[str, tuple[str, int]]
    inputs_: list[str]
    outputs_: list[str]

    def check_node(self, node: Node) -> None:
        for key, refused in _REFUSED.items():
            if node.attr.get(key) in refused:
                raise FaceReconError(
                    f"{self.source}: node {node.name!r} ({node.op}) has {key}="
                    f"{node.attr[key]!r}, which facerecon's ONNX reader does not support"
                )
        if node.op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool"):
            kernel = node.attr.get("kernel_shape")
            if kernel is not None and len(kernel) != 2:
                raise FaceReconError(
                    f"{self.source}: node {node.name!r} ({node.op}) is not 2-D; facerecon's "
                    "ONNX reader supports 2-D ones"
                )
        if node.op == "ConvTranspose" and "output_shape" in node.attr:
            raise FaceReconError(
                f"{self.source}: node {node.name!r} (ConvTranspose) gives output_shape; "
                "facerecon's ONNX reader supports pads"
            )

    def apply(self, node: Node, args: list[tf.Tensor]) -> tf.Tensor | tuple[tf.Tensor, ...]:
        return fold_static(OPS[node.op], node, args)

    def tensor(self, name: str) -> str:
        """The node whose value is the tensor ``name`` (made on first use)."""
        node_name = f"{TENSOR}:{name}"
        if node_name not in self.nodes:
            if name not in self.producers:
                raise FaceReconError(f"{self.source}: the graph has no tensor {name!r}")
            source, port = self.producers[name]
            self.nodes[node_name] = Node(node_name, TENSOR, (source,), {}, (port,))
        return node_name

    @property
    def parameters(self) -> list[str]:
        """The graph's inputs (tensors that are not initializers), in file order."""
        return list(self.inputs_)

    @property
    def results(self) -> list[str]:
        """The nodes of the graph's outputs, in file order."""
        return [self.tensor(name) for name in self.outputs_]


def _attributes(node: Any, opset: int) -> dict[str, Any]:
    from onnx import helper, numpy_helper

    attr: dict[str, Any] = {"_opset": opset, "_outputs": len(node.output)}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if a.name in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            attr["_value"] = (
                numpy_helper.to_array(value) if a.name == "value" else np.asarray(value)
            )
            continue
        attr[a.name] = value
    return attr


def _read(path: Path) -> Any:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FaceReconError(f"ONNX model {path} does not exist") from None
    if size >= MAX_BYTES:
        raise FaceReconError(f"{path} holds {size} bytes; an ONNX file is below {MAX_BYTES}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError) as error:
        raise FaceReconError(
            f"{path} is not an ONNX model ({type(error).__name__}: {error})"
        ) from None
    if not model.graph.node:
        raise FaceReconError(f"{path} is not an ONNX model (its graph has no nodes)")
    external = [
        t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise FaceReconError(
            f"{path}: weights such as {external[0]!r} are in external data files, which "
            "facerecon's ONNX reader does not read; save the model as one file"
        )
    return model


def load_onnx(path: str | Path, outputs: Sequence[str] | None = None) -> OnnxGraph:
    """Read an ``.onnx`` file; check every op the ``outputs`` (tensor names; default: the
    graph's outputs) need."""
    from onnx import numpy_helper

    path = Path(path)
    model = _read(path)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1)
    graph = model.graph
    nodes: dict[str, Node] = {}
    weights: dict[str, np.ndarray] = {ABSENT: np.zeros((0,), np.float32)}
    producers: dict[str, tuple[str, int]] = {"": (ABSENT, 0)}
    nodes[ABSENT] = Node(ABSENT, CONST, (), {})
    for tensor in graph.initializer:
        weights[tensor.name] = numpy_helper.to_array(tensor)
        nodes[tensor.name] = Node(tensor.name, CONST, (), {})
        producers[tensor.name] = (tensor.name, 0)
    feeds = [i.name for i in graph.input if i.name not in weights]
    for name in feeds:
        nodes[name] = Node(name, FEED, (), {})
        producers[name] = (name, 0)
    for index, raw in enumerate(graph.node):
        name = raw.name or f"{raw.op_type}_{index}"
        if name in nodes:
            name = f"{name}#{index}"
        if raw.domain not in ("", "ai.onnx"):
            raise FaceReconError(
                f"{path}: node {name!r} uses op {raw.op_type!r} of domain {raw.domain!r}, which "
                "facerecon's ONNX reader does not support (only the standard domain)"
            )
        sources = []
        for tensor in raw.input:
            if tensor not in producers:
                raise FaceReconError(f"{path}: node {name!r} reads {tensor!r}, which nothing makes")
            sources.append(producers[tensor])
        nodes[name] = Node(
            name, raw.op_type, tuple(s for s, _ in sources), _attributes(raw, opset),
            tuple(p for _, p in sources),
        )  # fmt: skip
        for port, tensor in enumerate(raw.output):
            if tensor:
                producers[tensor] = (name, port)
    built = OnnxGraph(path, nodes, weights)
    built.producers = producers
    built.inputs_ = feeds
    built.outputs_ = [o.name for o in graph.output]
    wanted = list(outputs) if outputs is not None else built.outputs_
    built.check(built.order([built.tensor(name) for name in wanted]))
    return built
