"""Reader for TensorFlow.js graph models, rebuilt with TensorFlow ops so gradients reach the input.

A graph model is a ``model.json`` (a GraphDef as JSON plus a weights manifest) and binary
weight shards. :func:`load_graph_model` reads and checks both into a
:class:`facerecon.graphs.graph.Graph`, whose ops are TensorFlow's own (a GraphDef's).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from facerecon.core.errors import FaceReconError
from facerecon.graphs import graph, ops
from facerecon.graphs.graph import GraphLayer, chain

__all__ = ["SUPPORTED_OPS", "GraphLayer", "GraphModel", "Node", "chain", "load_graph_model"]

_PLAIN = {"float32": "<f4", "int32": "<i4", "bool": "?"}  # unquantized dtypes, as stored
_TARGETS = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANTIZED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
_UNARY: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "Identity": tf.identity,
    "Relu": tf.nn.relu,
    "Relu6": tf.nn.relu6,
    "Elu": tf.nn.elu,
    "Sigmoid": tf.sigmoid,
    "Tanh": tf.tanh,
    "Softmax": tf.nn.softmax,
    "Abs": tf.abs,
    "Neg": tf.negative,
    "Square": tf.square,
    "Sqrt": tf.sqrt,
    "Rsqrt": tf.math.rsqrt,
    "Exp": tf.exp,
}
_BINARY: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    "Add": tf.add,
    "AddV2": tf.add,
    "Sub": tf.subtract,
    "Mul": tf.multiply,
    "RealDiv": tf.divide,
    "Minimum": tf.minimum,
    "Maximum": tf.maximum,
}
# What a fused op may apply after its main op; BiasAdd and Prelu each take the next input.
_FUSED_STEPS = frozenset({"BiasAdd", "Prelu", "Relu", "Relu6", "Elu", "Sigmoid", "LeakyRelu"})
_STRUCTURAL = (
    "Placeholder", "Const", "Conv2D", "DepthwiseConv2dNative", "_FusedConv2D",
    "FusedDepthwiseConv2dNative", "MatMul", "_FusedMatMul", "BiasAdd", "Mean", "Sum",
    "Reshape", "Squeeze", "Pad", "LeakyRelu", "Prelu", "AvgPool", "MaxPool", "ConcatV2",
)  # fmt: skip
SUPPORTED_OPS: frozenset[str] = frozenset((*_UNARY, *_BINARY, *_STRUCTURAL))


@dataclass(frozen=True)
class Node(graph.Node):
    """One GraphDef node: data inputs are node names (control inputs are dropped)."""

    def get(self, key: str, default: Any = None) -> Any:
        """The decoded attribute ``key`` (strings from base64, ints from text)."""
        value = self.attr.get(key)
        return default if value is None else _decode_attr(value)


def _decode_attr(value: Mapping[str, Any]) -> Any:
    if "list" in value:
        items = value["list"]
        if "s" in items:
            return [base64.b64decode(s).decode() for s in items["s"]]
        if "i" in items:
            return [int(i) for i in items["i"]]
        if "f" in items:
            return [float(f) for f in items["f"]]
        return []
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    return value


class GraphModel(graph.Graph):
    """A TF.js graph model: its nodes, its decoded weights and where it came from."""

    reader = "TF.js"
    supported = SUPPORTED_OPS

    def check_node(self, node: Node) -> None:
        for step in node.get("fused_ops", []):
            if step not in _FUSED_STEPS:
                raise FaceReconError(
                    f"{self.source}: node {node.name!r} ({node.op}) fuses {step!r}, which "
                    f"facerecon's TF.js reader does not support "
                    f"(supported: {', '.join(sorted(_FUSED_STEPS))})"
                )

    def apply(self, node: Node, args: list[tf.Tensor]) -> tf.Tensor:
        return _apply(node, args)


def _apply(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
    """One node's value from its inputs' values.

    An attribute a node leaves out is None, which TensorFlow's op wrappers read as the op's
    own default (NHWC, no dilation, LeakyRelu's alpha 0.2), as a GraphDef import would.

    Shapes, axes and paddings come as the eager constants of their Const nodes: tracing
    (Keras, tf.function) captures tensors that small by value, so static shapes survive.
    """
    op = node.op
    if op in _UNARY:
        return _UNARY[op](args[0])
    if op in _BINARY:
        return _BINARY[op](args[0], args[1])

    if op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
        return _fused(node, _conv(node, args[0], args[1]), args[2:])
    if op in ("MatMul", "_FusedMatMul"):
        out = tf.linalg.matmul(
            args[0],
            args[1],
            transpose_a=bool(node.get("transpose_a")),
            transpose_b=bool(node.get("transpose_b")),
        )
        return _fused(node, out, args[2:])
    if op == "BiasAdd":
        return tf.nn.bias_add(args[0], args[1], data_format=_bias_format(node))
    if op == "LeakyRelu":
        return tf.nn.leaky_relu(args[0], alpha=node.get("alpha"))
    if op == "Prelu":
        return ops.prelu(args[0], args[1])
    if op in ("Mean", "Sum"):
        reduce = tf.reduce_mean if op == "Mean" else tf.reduce_sum
        return reduce(args[0], axis=args[1], keepdims=bool(node.get("keep_dims")))
    if op == "Reshape":
        return tf.reshape(args[0], args[1])
    if op == "Squeeze":
        return tf.squeeze(args[0], axis=node.get("squeeze_dims") or None)
    if op == "Pad":
        return tf.pad(args[0], args[1])
    if op == "ConcatV2":
        return tf.concat(args[:-1], axis=args[-1])
    if op in ("AvgPool", "MaxPool"):
        pool = tf.nn.avg_pool if op == "AvgPool" else tf.nn.max_pool
        first = node.get("data_format") == "NCHW"
        x = ops.to_channels_last(args[0]) if first else args[0]
        out = pool(
            x,
            ksize=_spatial(node, "ksize"),
            strides=_spatial(node, "strides"),
            padding=node.get("padding"),
        )
        return ops.to_channels_first(out) if first else out
    raise AssertionError(f"op {op} passed the check but has no implementation")


def _spatial(node: Node, name: str) -> list[int]:
    """The (height, width) pair of a per-axis attribute in the node's data format (1s where
    the node leaves it out)."""
    value = node.get(name) or [1, 1, 1, 1]
    return list(value[2:4] if node.get("data_format") == "NCHW" else value[1:3])


def _conv(node: Node, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """A Conv2D or DepthwiseConv2dNative node on ``x``, run channels-last whatever the
    node's data format: TensorFlow's CPU kernels take no other."""
    first = node.get("data_format") == "NCHW"
    strides, dilations = _spatial(node, "strides"), _spatial(node, "dilations")
    pads: ops.Pads | str = node.get("padding")
    if pads == "EXPLICIT":
        flat = list(node.get("explicit_paddings"))
        flat = flat[4:8] if first else flat[2:6]
        pads = [(flat[0], flat[1]), (flat[2], flat[3])]
    x = ops.to_channels_last(x) if first else x
    if node.op in ("Conv2D", "_FusedConv2D"):
        out = ops.conv2d(x, kernel, strides, dilations, pads)
    else:
        out = ops.depthwise_conv2d(x, kernel, strides, dilations, pads)
    return ops.to_channels_first(out) if first else out


def _bias_format(node: Node) -> str:
    return "NCHW" if node.get("data_format") == "NCHW" else "NHWC"


def _fused(node: Node, x: tf.Tensor, extra: list[tf.Tensor]) -> tf.Tensor:
    """Apply a fused op's ``fused_ops`` in order, each taking its extra inputs in turn."""
    for step in node.get("fused_ops", []):
        if step == "BiasAdd":
            x = tf.nn.bias_add(x, extra.pop(0), data_format=_bias_format(node))
        elif step == "Prelu":
            x = ops.prelu(x, extra.pop(0))
        elif step == "LeakyRelu":
            x = tf.nn.leaky_relu(x, alpha=node.get("leakyrelu_alpha"))
        else:
            x = _UNARY[step](x)
    return x


def _read_json(path: Path) -> dict[str, Any]:
    try:
        model = json.loads(path.read_text())
    except FileNotFoundError:
        raise FaceReconError(f"TF.js model file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FaceReconError(f"cannot read TF.js model file {path}: {error}") from None
    if not isinstance(model, dict) or "modelTopology" not in model:
        raise FaceReconError(f"{path} is not a TF.js graph model (no modelTopology)")
    return model


def _read_weights(path: Path, manifest: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Decode every weight group: a group's shards are one buffer, read in manifest order."""
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        shards = [path.parent / shard for shard in group["paths"]]
        chunks = []
        for shard in shards:
            try:
                chunks.append(shard.read_bytes())
            except FileNotFoundError:
                raise FaceReconError(
                    f"{path}: weight shard {shard} does not exist (download it next to the model)"
                ) from None
            except OSError as error:
                raise FaceReconError(
                    f"cannot read weight shard {shard}: {error.strerror}"
                ) from None
        buffer = b"".join(chunks)
        offset = 0
        for spec in group["weights"]:
            array, offset = _decode_weight(spec, buffer, offset, shards[-1])
            weights[spec["name"]] = array
        if offset != len(buffer):
            names = ", ".join(str(s) for s in shards)
            raise FaceReconError(
                f"weight shard {names} holds {len(buffer)} bytes but {path} describes {offset}"
            )
    return weights


def _decode_weight(
    spec: Mapping[str, Any], buffer: bytes, offset: int, shard: Path
) -> tuple[np.ndarray, int]:
    """One weight from ``buffer`` at ``offset``; returns it and the offset after it."""
    name, dtype = spec["name"], spec["dtype"]
    shape = tuple(int(d) for d in spec["shape"])
    count = math.prod(shape)
    quantization = spec.get("quantization")
    target = _TARGETS.get(dtype)
    if target is None:
        raise FaceReconError(f"weight {name!r} has dtype {dtype!r}, which is not supported")
    if quantization:
        kind = quantization.get("dtype")
        if kind not in _QUANTIZED:
            raise FaceReconError(
                f"weight {name!r} is quantized as {kind!r}, which facerecon's TF.js reader "
                f"does not support (supported: {', '.join(_QUANTIZED)})"
            )
        stored = np.dtype(_QUANTIZED[kind]).newbyteorder("<")
    else:
        stored = np.dtype(_PLAIN[dtype])
    end = offset + count * stored.itemsize
    if end > len(buffer):
        raise FaceReconError(
            f"weight shard {shard} is too short: weight {name!r} needs bytes {offset}..{end}, "
            f"the shards hold {len(buffer)}"
        )
    values = np.frombuffer(buffer, dtype=stored, count=count, offset=offset)
    if quantization and quantization["dtype"] != "float16":
        # As TF.js does: in double precision (JavaScript numbers), rounded once to float32.
        values = values * float(quantization["scale"]) + float(quantization["min"])
    if target is np.int32 and values.dtype.kind == "f":
        # JavaScript's Math.round: halves go up, where numpy's round goes to even.
        low = np.floor(values)
        values = low + (values - low >= 0.5)
    return values.astype(target).reshape(shape), end


def load_graph_model(path: str | Path, outputs: Sequence[str] | None = None) -> GraphModel:
    """Read ``model.json`` and its shards; check every op ``outputs`` need (all if None)."""
    path = Path(path)
    model = _read_json(path)
    if model.get("format", "graph-model") != "graph-model":
        raise FaceReconError(f"{path} is a TF.js {model['format']!r}, not a graph-model")
    nodes: dict[str, Node] = {}
    for raw in model["modelTopology"].get("node", []):
        inputs = []
        for source in raw.get("input", []):
            if source.startswith("^"):
                continue  # control dependencies order side effects; a pure graph has none
            base, _, index = source.partition(":")
            if index not in ("", "0"):
                raise FaceReconError(
                    f"{path}: node {raw['name']!r} reads output {index} of {base!r}; only "
                    "single-output ops are supported"
                )
            inputs.append(base)
        nodes[raw["name"]] = Node(raw["name"], raw["op"], tuple(inputs), raw.get("attr", {}))
    graph = GraphModel(path, nodes, _read_weights(path, model.get("weightsManifest", [])))
    graph.check(graph.order(outputs) if outputs is not None else list(nodes))
    return graph
