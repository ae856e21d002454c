"""Reader for OpenVINO IR models (v10, v11), rebuilt with TensorFlow ops so gradients reach
the input.

An IR is an XML graph (layers and the edges between their ports) and a ``.bin`` file that its
``Const`` layers point into by offset and size. :func:`load_ir` reads and checks both; the
graph runs as a :class:`facerecon.graphs.graph.Graph`, over the convolutions of
:mod:`facerecon.graphs.ops`. Tensors keep OpenVINO's channels-first layout; the convolutions
move to channels-last and back around TensorFlow's kernels.

Values that only depend on constants and static shapes (the shape arithmetic of
``ShapeOf``, ``Gather``, ``Concat``, ...) are computed once, eagerly, so that a traced graph
keeps static shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree
import numpy as np
import tensorflow as tf
from defusedxml import DefusedXmlException

from facerecon.core.errors import FaceReconError
from facerecon.graphs import ops
from facerecon.graphs.graph import Graph, Node, fold_static

#: an IR's XML beyond this is not a model graph (the largest face and generator IRs are < 1 MB)
MAX_XML_BYTES = 64 * 2**20
_VERSIONS = ("10", "11")
_TYPES = {
    "f32": np.float32, "f16": np.float16, "f64": np.float64, "i64": np.int64, "i32": np.int32,
    "i8": np.int8, "u8": np.uint8, "boolean": np.bool_,
}  # fmt: skip
_TF_TYPES = {"f32": tf.float32, "f16": tf.float16, "f64": tf.float64, "i64": tf.int64,
             "i32": tf.int32, "i8": tf.int8, "u8": tf.uint8, "boolean": tf.bool}  # fmt: skip

Op = Callable[[Node, list[tf.Tensor]], Any]


def _ints(node: Node, key: str, default: Sequence[int] | None = None) -> list[int]:
    text = node.attr.get(key)
    if text is None:
        if default is None:
            raise FaceReconError(f"layer {node.name!r} ({node.op}) has no attribute {key!r}")
        return list(default)
    return [int(v) for v in text.replace(" ", "").split(",") if v != ""]


def _flag(node: Node, key: str, default: bool = False) -> bool:
    return node.attr.get(key, str(default)).lower() == "true"


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _binary(fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> Op:
    return lambda node, args: fn(args[0], args[1])


def _unary(fn: Callable[[tf.Tensor], tf.Tensor]) -> Op:
    return lambda node, args: fn(args[0])


def _divide(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    a, b = args
    if a.dtype.is_integer:
        # OpenVINO's m_pythondiv (the default): integer division rounds down, as Python's //
        return tf.math.floordiv(a, b) if _flag(node, "m_pythondiv", True) else tf.truncatediv(a, b)
    return tf.divide(a, b)


def _prelu(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x, slope = args
    if slope.shape.rank == 1 and x.shape.rank > 2 and slope.shape[0] == x.shape[1] != 1:
        # A per-channel slope runs along axis 1 (channels first), not numpy's last axis.
        slope = tf.reshape(slope, [-1] + [1] * (x.shape.rank - 2))
    return ops.prelu(x, slope)


def _matmul(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    a, b = args
    if a.shape.rank < 2 or b.shape.rank < 2:
        raise FaceReconError(f"layer {node.name!r} (MatMul) has a 1-D input, not supported")
    return tf.linalg.matmul(
        a, b, transpose_a=_flag(node, "transpose_a"), transpose_b=_flag(node, "transpose_b")
    )


def _reduce(fn: Callable[..., tf.Tensor]) -> Op:
    def reduce(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
        axes = [_axis(int(a), args[0].shape.rank) for a in np.ravel(tf.get_static_value(args[1]))]
        return fn(args[0], axis=axes, keepdims=_flag(node, "keep_dims"))

    return reduce


def _shape_of(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    dtype = _TF_TYPES[node.attr.get("output_type", "i64")]
    x = args[0]
    if x.shape.is_fully_defined():
        return tf.constant(x.shape.as_list(), dtype)
    return tf.shape(x, out_type=dtype)


def _gather(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    data, indices, axis = args
    axis = _axis(int(tf.get_static_value(axis)), data.shape.rank)
    known = tf.get_static_value(indices)
    if known is not None and data.shape[axis] is not None:
        indices = np.where(known < 0, known + data.shape[axis], known)  # counted from the end
    else:
        size = tf.shape(data, out_type=indices.dtype)[axis]
        indices = tf.where(indices < 0, indices + size, indices)
    return tf.gather(data, indices, axis=axis, batch_dims=int(node.attr.get("batch_dims", 0)))


def _unsqueeze(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x, axes = args
    axes = np.ravel(tf.get_static_value(axes))
    rank = x.shape.rank + len(axes)
    for axis in sorted(_axis(int(a), rank) for a in axes):
        x = tf.expand_dims(x, axis)
    return x


def _squeeze(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x = args[0]
    if len(args) == 1:
        return tf.squeeze(x)
    axes = [_axis(int(a), x.shape.rank) for a in np.ravel(tf.get_static_value(args[1]))]
    return tf.squeeze(x, axis=axes)


def _concat(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    return tf.concat(args, axis=_axis(int(node.attr.get("axis", 0)), args[0].shape.rank))


def _reshape(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x, shape = args
    target = tf.get_static_value(shape)
    if target is not None:
        dims = [int(d) for d in np.ravel(target)]
        if _flag(node, "special_zero"):
            dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        if None not in dims:  # a static target keeps the traced shape static
            return tf.reshape(x, dims)
        if -1 not in dims:  # kept axes of unknown size (the batch of a trace): the rest stays
            live = tf.shape(x, out_type=tf.int64)
            out = tf.reshape(x, tf.stack([live[i] if d is None else d for i, d in enumerate(dims)]))
            out.set_shape(dims)
            return out
    if _flag(node, "special_zero"):
        # A 0 in the target keeps the input's size on that axis.
        # A target longer than the input's rank takes no 0 past it: pad what is kept.
        count, rank = shape.shape[0], x.shape.rank
        kept = tf.pad(tf.shape(x, out_type=shape.dtype)[:count], [[0, max(count - rank, 0)]])
        shape = tf.where(tf.equal(shape, 0), kept, shape)
    return tf.reshape(x, shape)


def _broadcast(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x, target = args[0], args[1]
    if node.attr.get("mode", "numpy") == "bidirectional":
        target = tf.broadcast_dynamic_shape(tf.shape(x, out_type=target.dtype), target)
    return tf.broadcast_to(x, target)


def _tile(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x, repeats = args
    rank, count = x.shape.rank, repeats.shape[0]
    if count > rank:  # more repeats than axes: the input gains leading axes of size 1
        x = tf.reshape(x, tf.concat([tf.ones([count - rank], tf.int32), tf.shape(x)], 0))
    elif count < rank:
        repeats = tf.concat([tf.ones([rank - count], repeats.dtype), repeats], 0)
    return tf.tile(x, repeats)


def _split(node: Node, args: list[tf.Tensor]) -> tuple[tf.Tensor, ...]:
    x, axis = args[0], _axis(int(tf.get_static_value(args[1])), args[0].shape.rank)
    if node.op == "Split":
        return tuple(tf.split(x, int(node.attr["num_splits"]), axis=axis))
    lengths = [int(v) for v in np.ravel(tf.get_static_value(args[2]))]
    return tuple(tf.split(x, lengths, axis=axis))


def _transpose(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    return tf.transpose(args[0], args[1])


def _clamp(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    return tf.clip_by_value(args[0], float(node.attr["min"]), float(node.attr["max"]))


def _convert(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    return tf.cast(args[0], _TF_TYPES[node.attr["destination_type"]])


def _pads(node: Node, sizes: Sequence[int], kernel: Sequence[int]) -> list[tuple[int, int]]:
    """(begin, end) per spatial axis, from the explicit pads or ``auto_pad``."""
    auto = node.attr.get("auto_pad", "explicit")
    if auto == "valid":
        return [(0, 0), (0, 0)]
    if auto in ("same_upper", "same_lower"):
        strides, dilations = _ints(node, "strides"), _ints(node, "dilations", (1, 1))
        return ops.same_pads(sizes, strides, dilations, kernel, auto == "same_upper")
    begin, end = _ints(node, "pads_begin"), _ints(node, "pads_end")
    return list(zip(begin, end, strict=True))


def _convolution(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x, weights = args
    groups = 1
    if node.op == "GroupConvolution":  # (G, O/G, I/G, kh, kw) -> (O, I/G, kh, kw)
        groups = weights.shape[0]
        weights = tf.reshape(weights, [-1, *weights.shape[2:]])
    strides, dilations = _ints(node, "strides"), _ints(node, "dilations", (1, 1))
    pads = _pads(node, x.shape[2:], weights.shape[2:])
    return ops.conv_nchw(x, weights, strides, dilations, pads, groups)


def _deconvolution(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    x, weights = args
    groups = 1
    if node.op == "GroupConvolutionBackpropData":  # (G, I/G, O/G, kh, kw) -> (I, O/G, ...)
        groups = weights.shape[0]
        weights = tf.reshape(weights, [-1, *weights.shape[2:]])
    return ops.conv_transpose_nchw(
        x, weights, _ints(node, "strides"), _ints(node, "dilations", (1, 1)),
        _pads(node, (0, 0), (0, 0)), _ints(node, "output_padding", (0, 0)), groups,
    )  # fmt: skip


OPS: dict[str, Op] = {
    "Result": _unary(tf.identity),
    "Add": _binary(tf.add),
    "Subtract": _binary(tf.subtract),
    "Multiply": _binary(tf.multiply),
    "Divide": _divide,
    "Power": _binary(tf.pow),
    "Maximum": _binary(tf.maximum),
    "Minimum": _binary(tf.minimum),
    "ReLU": _unary(tf.nn.relu),
    "Sigmoid": _unary(tf.sigmoid),
    "Tanh": _unary(tf.tanh),
    "Exp": _unary(tf.exp),
    "Sqrt": _unary(tf.sqrt),
    "Abs": _unary(tf.abs),
    "Negative": _unary(tf.negative),
    "Clamp": _clamp,
    "Convert": _convert,
    "PReLU": _prelu,
    "MatMul": _matmul,
    "ReduceMean": _reduce(tf.reduce_mean),
    "ReduceSum": _reduce(tf.reduce_sum),
    "ShapeOf": _shape_of,
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": _concat,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Broadcast": _broadcast,
    "Tile": _tile,
    "Split": _split,
    "VariadicSplit": _split,
    "Convolution": _convolution,
    "GroupConvolution": _convolution,
    "ConvolutionBackpropData": _deconvolution,
    "GroupConvolutionBackpropData": _deconvolution,
}
#: attribute values the ops above implement; any other value is refused at load
_CHOICES = {
    "auto_broadcast": ("numpy", "none"),
    "auto_pad": ("explicit", "notset", "valid", "same_upper", "same_lower"),
    "mode": ("numpy", "bidirectional"),
    "allow_axis_skip": ("false",),  # Squeeze-15
}
_CONVOLUTIONS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData",
                 "GroupConvolutionBackpropData")  # fmt: skip
_INPUTS = {"ConvolutionBackpropData": 2, "GroupConvolutionBackpropData": 2, "Broadcast": 2}


class IRGraph(Graph):
    """An OpenVINO IR graph: layers by name, constants by layer name."""

    reader = "OpenVINO IR"
    noun = "layer"
    feed_op = "Parameter"
    const_op = "Const"
    supported = frozenset({"Parameter", "Const", *OPS})

    def check_node(self, node: Node) -> None:
        for key, choices in _CHOICES.items():
            value = node.attr.get(key)
            if value is not None and value not in choices:
                raise FaceReconError(
                    f"{self.source}: layer {node.name!r} ({node.op}) has {key}={value!r}, which "
                    f"facerecon's OpenVINO IR reader does not support (supported: "
                    f"{', '.join(choices)})"
                )
        most = _INPUTS.get(node.op)
        if most is not None and len(node.inputs) > most:
            raise FaceReconError(
                f"{self.source}: layer {node.name!r} ({node.op}) has {len(node.inputs)} inputs; "
                f"facerecon's OpenVINO IR reader supports {most}"
            )
        if node.op in _CONVOLUTIONS and len(_ints(node, "strides")) != 2:
            raise FaceReconError(
                f"{self.source}: layer {node.name!r} ({node.op}) is not a 2-D convolution; "
                "facerecon's OpenVINO IR reader supports 2-D ones"
            )

    def apply(self, node: Node, args: list[tf.Tensor]) -> tf.Tensor | tuple[tf.Tensor, ...]:
        return fold_static(OPS[node.op], node, args)

    @property
    def parameters(self) -> list[str]:
        """The graph's inputs (its ``Parameter`` layers), in file order."""
        return [n for n, node in self.nodes.items() if node.op == "Parameter"]

    @property
    def results(self) -> list[str]:
        """The graph's outputs (its ``Result`` layers), in file order."""
        return [n for n, node in self.nodes.items() if node.op == "Result"]


def _parse(xml: Path) -> Element:
    try:
        size = xml.stat().st_size
    except FileNotFoundError:
        raise FaceReconError(f"OpenVINO IR file {xml} does not exist") from None
    if size > MAX_XML_BYTES:
        raise FaceReconError(
            f"{xml} holds {size} bytes; an OpenVINO IR graph is at most {MAX_XML_BYTES}"
        )
    try:
        root = defusedxml.ElementTree.parse(xml, forbid_dtd=True).getroot()
    except (DefusedXmlException, SyntaxError, OSError) as error:
        raise FaceReconError(f"cannot read OpenVINO IR file {xml}: {error}") from None
    if root.tag != "net" or root.get("version") not in _VERSIONS:
        raise FaceReconError(
            f"{xml} is not an OpenVINO IR v{' or v'.join(_VERSIONS)} graph "
            f"(root <{root.tag} version={root.get('version')!r}>)"
        )
    return root


def _constant(xml: Path, weights: Path, blob: bytes, name: str, data: dict[str, str]) -> np.ndarray:
    kind = data.get("element_type")
    if kind not in _TYPES:
        raise FaceReconError(
            f"{xml}: constant {name!r} has element type {kind!r}, which facerecon's OpenVINO "
            f"IR reader does not support (supported: {', '.join(_TYPES)})"
        )
    shape = [int(d) for d in data.get("shape", "").replace(" ", "").split(",") if d != ""]
    dtype = np.dtype(_TYPES[kind]).newbyteorder("<")
    offset, size = int(data["offset"]), int(data["size"])
    # OpenVINO writes one byte for an empty constant
    if size != math.prod(shape) * dtype.itemsize and not (math.prod(shape) == 0 and size <= 1):
        raise FaceReconError(
            f"{xml}: constant {name!r} of shape {shape} ({kind}) says {size} bytes, "
            f"not {math.prod(shape) * dtype.itemsize}"
        )
    if offset < 0 or offset + size > len(blob):
        raise FaceReconError(
            f"{weights} is too short: constant {name!r} needs bytes {offset}..{offset + size}, "
            f"the file holds {len(blob)}"
        )
    values = np.frombuffer(blob, dtype=dtype, count=math.prod(shape), offset=offset)
    return values.astype(dtype.newbyteorder("=")).reshape(shape)


def _edges(xml: Path, root: Element, raw: list[Element]) -> dict[str, list[tuple[int, str, int]]]:
    """Per layer id, its inputs as (input port, source layer name, source output index)."""
    names = {layer.get("id", ""): layer.get("name", "") for layer in raw}
    if len(set(names.values())) != len(raw):
        raise FaceReconError(f"{xml}: two layers share an id or a name")
    outs = {}  # layer id -> its output port ids, in order
    for layer in raw:
        output = layer.find("output")
        outs[layer.get("id", "")] = [p.get("id", "") for p in output] if output is not None else []
    edges: dict[str, list[tuple[int, str, int]]] = {lid: [] for lid in names}
    for edge in root.iter("edge"):
        source, target = edge.get("from-layer", ""), edge.get("to-layer", "")
        if source not in names or target not in names:
            raise FaceReconError(
                f"{xml}: an edge joins layer ids {source!r} and {target!r}, which are not both "
                "in the graph"
            )
        port = edge.get("from-port", "")
        if port not in outs[source]:
            raise FaceReconError(f"{xml}: layer {names[source]!r} has no output port {port!r}")
        to_port = int(edge.get("to-port", "0"))
        edges[target].append((to_port, names[source], outs[source].index(port)))
    return edges


def _read_blob(xml: Path, weights: Path) -> bytes:
    try:
        return weights.read_bytes()
    except FileNotFoundError:
        raise FaceReconError(f"{xml}: its weights file {weights} does not exist") from None
    except OSError as error:
        raise FaceReconError(f"cannot read OpenVINO IR weights {weights}: {error}") from None


def load_ir(
    xml: str | Path, weights: str | Path | None = None, outputs: Sequence[str] | None = None
) -> IRGraph:
    """Read an IR's ``.xml`` and its ``.bin`` (``weights``, default: beside it with the same
    stem); check every op ``outputs`` need (all layers if None)."""
    xml = Path(xml)
    weights = xml.with_suffix(".bin") if weights is None else Path(weights)
    root = _parse(xml)
    layers = root.find("layers")
    if layers is None:
        raise FaceReconError(f"{xml}: the IR has no <layers>")
    raw = list(layers.iter("layer"))
    edges = _edges(xml, root, raw)
    blob = _read_blob(xml, weights)
    nodes: dict[str, Node] = {}
    constants: dict[str, np.ndarray] = {}
    for layer in raw:
        data_element = layer.find("data")
        data = dict(data_element.attrib) if data_element is not None else {}
        inputs = sorted(edges[layer.get("id", "")])
        node = Node(
            layer.get("name", ""), layer.get("type", ""), tuple(s for _, s, _ in inputs), data,
            tuple(p for _, _, p in inputs),
        )  # fmt: skip
        nodes[node.name] = node
        if node.op == "Const":
            constants[node.name] = _constant(xml, weights, blob, node.name, data)
    graph = IRGraph(xml, nodes, constants)
    graph.check(graph.order(outputs) if outputs is not None else list(nodes))
    return graph
