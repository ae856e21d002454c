"""The TF.js graph-model reader, on tiny models written here: every op it supports is checked
against numpy, and a faceres-like graph against TensorFlow running the same GraphDef."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from google.protobuf import json_format  # noqa: E402

from facerecon.core.errors import FaceReconError  # noqa: E402
from facerecon.graphs.tfjs import SUPPORTED_OPS, GraphLayer, Node, chain, load_graph_model  # noqa: E402

RNG = np.random.default_rng(7)


def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(values: list[int]) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def _conv_attr(stride: int, padding: str, fused: list[str] | None = None) -> dict:
    attr = {
        "strides": _ints([1, stride, stride, 1]),
        "padding": _s(padding),
        "data_format": _s("NHWC"),
        "dilations": _ints([1, 1, 1, 1]),
        "explicit_paddings": {"list": {}},
    }
    if fused:
        attr["fused_ops"] = {"list": {"s": [_s(f)["s"] for f in fused]}}
        attr["num_args"] = {"i": str(len(fused))}
    return attr


def _node(name: str, op: str, inputs: list[str] = (), **attr) -> dict:
    return {"name": name, "op": op, "input": list(inputs), "attr": attr}


def _encode(name: str, value: np.ndarray, how: str) -> tuple[dict, bytes, np.ndarray]:
    """A manifest entry, its bytes and the value a reader must decode from them."""
    spec = {"name": name, "shape": list(value.shape), "dtype": "float32"}
    if how == "float16":
        spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
        half = value.astype("<f2")
        return spec, half.tobytes(), half.astype(np.float32)
    if how in ("uint8", "uint16"):
        levels = 255 if how == "uint8" else 65535
        low, scale = float(value.min()), float(value.max() - value.min()) / levels
        q = np.round((value - low) / scale).astype("<u1" if how == "uint8" else "<u2")
        spec["quantization"] = {"dtype": how, "scale": scale, "min": low}
        # TF.js dequantizes in double precision (JavaScript numbers), then stores float32.
        return spec, q.tobytes(), (q * scale + low).astype(np.float32)
    if how == "int32":
        spec["dtype"] = "int32"
        return spec, value.astype("<i4").tobytes(), value.astype(np.int32)
    if how == "bool":
        spec["dtype"] = "bool"
        return spec, value.astype("?").tobytes(), value.astype(np.bool_)
    return spec, value.astype("<f4").tobytes(), value.astype(np.float32)


def write_model(
    folder: Path, nodes: list[dict], weights: list[tuple[str, np.ndarray, str]], shards: int = 2
) -> tuple[Path, dict[str, np.ndarray]]:
    """Write model.json and ``shards`` shards; returns its path and the decoded weights."""
    specs, blobs, decoded = [], [], {}
    for name, value, how in weights:
        spec, blob, value_read = _encode(name, np.asarray(value), how)
        specs.append(spec)
        blobs.append(blob)
        decoded[name] = value_read
    data = b"".join(blobs)
    cut = [round(i * len(data) / shards) for i in range(shards + 1)]
    paths = []
    for i in range(shards):
        path = f"group1-shard{i + 1}of{shards}.bin"
        (folder / path).write_bytes(data[cut[i] : cut[i + 1]])
        paths.append(path)
    model = {
        "format": "graph-model",
        "modelTopology": {"node": nodes},
        "weightsManifest": [{"paths": paths, "weights": specs}],
    }
    (folder / "model.json").write_text(json.dumps(model))
    return folder / "model.json", decoded


def _const(name: str) -> dict:
    return _node(name, "Const")


# ---- the tiny conv model: fused Conv2D + BiasAdd, ReLU6 as Minimum/Maximum, Mean ----

CONV_NODES = [
    _node("x", "Placeholder"),
    _const("w"),
    _const("b"),
    _const("six"),
    _const("zero"),
    _const("axes"),
    _node("conv", "_FusedConv2D", ["x", "w", "b"], **_conv_attr(1, "SAME", ["BiasAdd"])),
    _node("clip/Minimum", "Minimum", ["conv", "six"]),
    _node("clip", "Maximum", ["clip/Minimum", "zero"]),
    _node("pool", "Mean", ["clip", "axes"], keep_dims={"b": False}),
]


def conv_weights() -> list[tuple[str, np.ndarray, str]]:
    return [
        ("w", RNG.normal(0, 1.0, (3, 3, 2, 4)), "float16"),
        ("b", RNG.uniform(-1, 2, 4), "uint8"),
        ("six", np.array(6.0), "float32"),
        ("zero", np.array(0.0), "float32"),
        ("axes", np.array([1, 2]), "int32"),
    ]


def numpy_conv_same(x: np.ndarray, w: np.ndarray, stride: int = 1) -> np.ndarray:
    """Cross-correlation with TF's SAME padding, written out independently."""
    n, h, width, _ = x.shape
    kh, kw, _, out = w.shape
    oh, ow = -(-h // stride), -(-width // stride)
    pad_h = max((oh - 1) * stride + kh - h, 0)
    pad_w = max((ow - 1) * stride + kw - width, 0)
    xp = np.pad(
        x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    )
    y = np.zeros((n, oh, ow, out))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            y[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w)
    return y


@pytest.fixture
def conv_model(tmp_path: Path):
    return write_model(tmp_path, CONV_NODES, conv_weights())


def test_quantized_weights_are_decoded(conv_model):
    path, decoded = conv_model
    graph = load_graph_model(path)
    for name, value in decoded.items():
        np.testing.assert_array_equal(graph.weights[name], value)
        assert graph.weights[name].dtype == value.dtype
    assert graph.weights["axes"].dtype == np.int32
    assert graph.weights["w"].shape == (3, 3, 2, 4) and graph.weights["six"].shape == ()


def test_tiny_model_matches_numpy(conv_model):
    path, decoded = conv_model
    graph = load_graph_model(path, ["pool"])
    x = RNG.normal(0, 1, (3, 5, 6, 2)).astype(np.float32)
    (out,) = graph.run({"x": tf.constant(x)}, ["pool"])
    conv = numpy_conv_same(x.astype(np.float64), decoded["w"].astype(np.float64)) + decoded["b"]
    expected = np.clip(conv, 0, 6).mean(axis=(1, 2))
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert (conv > 6).any() and (conv < 0).any()  # both ends of the clip are exercised


def test_uint16_weights_and_fused_depthwise_matmul_prelu(tmp_path: Path):
    nodes = [
        _node("x", "Placeholder"),
        *(_const(n) for n in ("pads", "dw", "dwb", "shape", "k", "kb", "alpha")),
        _node("pad", "Pad", ["x", "pads"]),
        _node(
            "dwconv",
            "FusedDepthwiseConv2dNative",
            ["pad", "dw", "dwb"],
            **_conv_attr(2, "VALID", ["BiasAdd", "Relu"]),
        ),
        _node("flat", "Reshape", ["dwconv", "shape"]),
        _node(
            "fc",
            "_FusedMatMul",
            ["flat", "k", "kb", "alpha"],
            fused_ops={"list": {"s": [_s("BiasAdd")["s"], _s("Prelu")["s"]]}},
            transpose_a={"b": False},
            transpose_b={"b": False},
        ),
        _node("prob", "Softmax", ["fc"]),
    ]
    weights = [
        ("pads", np.array([[0, 0], [1, 1], [1, 1], [0, 0]]), "int32"),
        ("dw", RNG.normal(0, 1, (3, 3, 2, 1)), "uint16"),
        ("dwb", RNG.normal(0, 0.1, 2), "float32"),
        ("shape", np.array([-1, 2 * 2 * 2]), "int32"),
        ("k", RNG.normal(0, 1, (8, 3)), "float16"),
        ("kb", RNG.normal(0, 1, 3), "uint8"),
        ("alpha", np.array([0.1, 0.2, 0.3]), "float32"),
    ]
    path, d = write_model(tmp_path, nodes, weights, shards=3)
    graph = load_graph_model(path)
    x = RNG.normal(0, 1, (2, 4, 4, 2)).astype(np.float32)
    fc, prob = graph.run({"x": tf.constant(x)}, ["fc", "prob"])

    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    dw = np.zeros((2, 2, 2, 2))
    for i in range(2):
        for j in range(2):
            patch = xp[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]
            dw[:, i, j, :] = np.einsum("nhwc,hwc->nc", patch, d["dw"][..., 0])
    dw = np.maximum(dw + d["dwb"], 0)
    pre = dw.reshape(2, 8) @ d["k"] + d["kb"]
    expected = np.where(pre > 0, pre, d["alpha"] * pre)
    np.testing.assert_allclose(fc.numpy(), expected, rtol=1e-5, atol=1e-5)
    softmax = np.exp(expected) / np.exp(expected).sum(1, keepdims=True)
    np.testing.assert_allclose(prob.numpy(), softmax, rtol=1e-5, atol=1e-6)


def test_pools_concat_and_elementwise_ops(tmp_path: Path):
    pool = {"ksize": _ints([1, 2, 2, 1]), "strides": _ints([1, 2, 2, 1]), "padding": _s("VALID")}
    nodes = [
        _node("x", "Placeholder"),
        _const("two"),
        _const("axis"),
        _node("max", "MaxPool", ["x"], **pool, data_format=_s("NHWC")),
        _node("avg", "AvgPool", ["x"], **pool, data_format=_s("NHWC")),
        _node("leaky", "LeakyRelu", ["max"], alpha={"f": 0.25}),
        _node("tanh", "Tanh", ["avg"]),
        _node("half", "RealDiv", ["tanh", "two"]),
        _node("cat", "ConcatV2", ["leaky", "half", "axis"]),
    ]
    path, _ = write_model(
        tmp_path, nodes, [("two", np.array(2.0), "float32"), ("axis", np.array(3), "int32")]
    )
    x = RNG.normal(0, 1, (2, 4, 6, 3)).astype(np.float32)
    (out,) = load_graph_model(path).run({"x": tf.constant(x)}, ["cat"])
    blocks = x.reshape(2, 2, 2, 3, 2, 3)
    biggest, mean = blocks.max(axis=(2, 4)), blocks.mean(axis=(2, 4))
    expected = np.concatenate(
        [np.where(biggest > 0, biggest, 0.25 * biggest), np.tanh(mean) / 2], 3
    )
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_unsupported_op_fails_at_load_with_one_line(tmp_path: Path):
    nodes = [*CONV_NODES, _node("gelu/erf", "Erf", ["pool"])]
    path, _ = write_model(tmp_path, nodes, conv_weights())
    with pytest.raises(FaceReconError) as caught:
        load_graph_model(path)
    message = str(caught.value)
    assert "\n" not in message
    assert "node 'gelu/erf' uses op 'Erf'" in message and str(path) in message
    assert "does not support" in message and "Conv2D" in message
    # A subgraph that does not need the node loads and runs.
    graph = load_graph_model(path, ["pool"])
    graph.run({"x": tf.zeros((1, 4, 4, 2))}, ["pool"])


def test_unsupported_fused_step_fails_at_load(tmp_path: Path):
    nodes = [dict(n) for n in CONV_NODES]
    nodes[6] = _node("conv", "_FusedConv2D", ["x", "w", "b"], **_conv_attr(1, "SAME", ["Swish"]))
    path, _ = write_model(tmp_path, nodes, conv_weights())
    with pytest.raises(FaceReconError, match="node 'conv' .*fuses 'Swish'"):
        load_graph_model(path)


def test_missing_shard_names_the_file(conv_model):
    path, _ = conv_model
    (path.parent / "group1-shard2of2.bin").unlink()
    with pytest.raises(FaceReconError) as caught:
        load_graph_model(path)
    assert "group1-shard2of2.bin" in str(caught.value) and "does not exist" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_short_shard_names_the_file(conv_model):
    path, _ = conv_model
    shard = path.parent / "group1-shard2of2.bin"
    shard.write_bytes(shard.read_bytes()[:-3])
    with pytest.raises(FaceReconError, match="group1-shard2of2.bin is too short"):
        load_graph_model(path)


def test_long_shard_is_an_error(conv_model):
    path, _ = conv_model
    shard = path.parent / "group1-shard2of2.bin"
    shard.write_bytes(shard.read_bytes() + b"\0\0\0\0")
    with pytest.raises(FaceReconError, match="holds .* bytes but"):
        load_graph_model(path)


def test_gradient_matches_finite_differences(conv_model):
    path, decoded = conv_model
    graph = load_graph_model(path, ["pool"])
    x = np.random.default_rng(11).normal(0, 1, (1, 5, 6, 2))

    def loss(image: np.ndarray) -> tf.Tensor:
        (pool,) = graph.run({"x": tf.cast(image, tf.float32)}, ["pool"])
        return tf.reduce_sum(tf.cast(pool, tf.float64) ** 2)

    image = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(image)
        value = loss(image)
    grad = tape.gradient(value, image).numpy()
    assert np.abs(grad).max() > 0
    # Only pixels whose 3x3 neighbourhood stays clear of the clip's kinks (0 and 6), so a
    # step of eps cannot cross one and the difference quotient is the derivative.
    conv = numpy_conv_same(x, decoded["w"].astype(np.float64)) + decoded["b"]
    margin = np.minimum(np.abs(conv), np.abs(conv - 6)).min(axis=3)[0]
    eps = 1e-2
    checked = 0
    for i, j, c in np.ndindex(5, 6, 2):
        if margin[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].min() < 10 * eps:
            continue
        bump = np.zeros(x.shape)
        bump[0, i, j, c] = eps
        numeric = (loss(x + bump) - loss(x - bump)).numpy() / (2 * eps)
        assert numeric == pytest.approx(grad[0, i, j, c], rel=1e-2, abs=1e-4)
        checked += 1
    assert checked >= 3


def test_keras_chain_in_tf_function_gives_input_gradients(conv_model):
    path, _ = conv_model
    graph = load_graph_model(path, ["pool"])
    image = keras.Input((5, 6, 2))
    out = chain(graph, image, "x", [("relu6", "clip"), ("pooled", "pool")])
    model = keras.Model(image, out)
    assert model.get_layer("relu6").output.shape == (None, 5, 6, 4)
    assert not model.trainable_weights
    x = tf.constant(RNG.normal(0, 1, (2, 5, 6, 2)).astype(np.float32))
    np.testing.assert_allclose(model(x).numpy(), graph.run({"x": x}, ["pool"])[0].numpy())

    @tf.function
    def grad(images: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(images)
            total = tf.reduce_sum(model(images))
        return tape.gradient(total, images)

    g = grad(x)
    assert g.shape == x.shape and float(tf.reduce_max(tf.abs(g))) > 0


def test_layer_refuses_a_stretch_that_needs_an_unfed_input(tmp_path: Path):
    nodes = [*CONV_NODES, _node("skip", "Add", ["pool", "x"])]
    path, _ = write_model(tmp_path, nodes, conv_weights())
    graph = load_graph_model(path)
    with pytest.raises(FaceReconError, match="depends on input 'x'"):
        GraphLayer(graph, "pool", "skip")
    with pytest.raises(FaceReconError, match="needs input 'x'"):
        graph.run({"pool": tf.zeros((1, 4))}, ["skip"])


# ---- every op in the reader's table, against numpy ----

UNARY = {
    "Identity": lambda x: x,
    "Relu": lambda x: np.maximum(x, 0),
    "Relu6": lambda x: np.clip(x, 0, 6),
    "Elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "Tanh": np.tanh,
    "Softmax": lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True),
    "Abs": np.abs,
    "Neg": np.negative,
    "Square": np.square,
    "Sqrt": np.sqrt,
    "Rsqrt": lambda x: 1 / np.sqrt(x),
    "Exp": np.exp,
}
BINARY = {
    "Add": np.add,
    "AddV2": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "RealDiv": np.divide,
    "Minimum": np.minimum,
    "Maximum": np.maximum,
}
STEPS = {  # a fused op's steps after its main op; BiasAdd and Prelu take the next inputs
    "Relu": UNARY["Relu"],
    "Relu6": UNARY["Relu6"],
    "Elu": UNARY["Elu"],
    "Sigmoid": UNARY["Sigmoid"],
}
STRUCTURAL = {
    "Placeholder", "Const", "Conv2D", "DepthwiseConv2dNative", "_FusedConv2D",
    "FusedDepthwiseConv2dNative", "MatMul", "_FusedMatMul", "BiasAdd", "Mean", "Sum",
    "Reshape", "Squeeze", "Pad", "LeakyRelu", "Prelu", "AvgPool", "MaxPool", "ConcatV2",
}  # fmt: skip


def _run(tmp_path: Path, nodes: list[dict], weights: list, feeds: dict, outputs: list[str]):
    path, decoded = write_model(tmp_path, nodes, weights)
    graph = load_graph_model(path, outputs)
    found = graph.run({k: tf.constant(v) for k, v in feeds.items()}, outputs)
    return [f.numpy() for f in found], decoded


def _prelu(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, alpha * x)


def _leaky(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x > 0, x, alpha * x)


def test_every_supported_op_is_evaluated_in_this_file():
    assert set(UNARY) | set(BINARY) | STRUCTURAL == SUPPORTED_OPS


@pytest.mark.parametrize("op", sorted(UNARY))
def test_each_unary_op_matches_numpy(tmp_path: Path, op: str):
    x = np.random.default_rng(1).uniform(-8, 8, (2, 3, 5)).astype(np.float32)
    if op in ("Sqrt", "Rsqrt"):
        x = np.abs(x) + 0.5
    (out,), _ = _run(
        tmp_path, [_node("x", "Placeholder"), _node("y", op, ["x"])], [], {"x": x}, ["y"]
    )
    assert out.shape == x.shape
    np.testing.assert_allclose(out, UNARY[op](x.astype(np.float64)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", sorted(BINARY))
def test_each_binary_op_matches_numpy_with_its_operands_in_order(tmp_path: Path, op: str):
    rng = np.random.default_rng(2)
    x = rng.uniform(-3, 3, (2, 3, 4)).astype(np.float32)
    c = rng.uniform(0.5, 2, 4) * rng.choice([-1, 1], 4)  # broadcast along the last axis
    nodes = [_node("x", "Placeholder"), _const("c"), _node("y", op, ["x", "c"])]
    nodes.append(_node("z", op, ["c", "x"]))
    (y, z), d = _run(tmp_path, nodes, [("c", c, "float32")], {"x": x}, ["y", "z"])
    x64, c64 = x.astype(np.float64), d["c"].astype(np.float64)
    np.testing.assert_allclose(y, BINARY[op](x64, c64), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z, BINARY[op](c64, x64), rtol=1e-5, atol=1e-6)


# ---- convolutions: strides, padding, dilations, data formats, channel multipliers ----


def numpy_conv(
    x: np.ndarray,
    w: np.ndarray,
    strides: tuple[int, int] = (1, 1),
    padding: str = "SAME",
    dilations: tuple[int, int] = (1, 1),
    explicit: list[tuple[int, int]] | None = None,
    depthwise: bool = False,
) -> np.ndarray:
    """TF's Conv2D (HWIO filter) or DepthwiseConv2dNative (HWCM filter, output channel
    c * M + m) on an NHWC input, written out with TF's padding rules."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, h, width, _ = x.shape
    (kh, kw), (sh, sw), (dh, dw) = w.shape[:2], strides, dilations
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1  # the dilated kernel's extent
    if padding == "SAME":
        pads = []
        for size, stride, extent in ((h, sh, eh), (width, sw, ew)):
            total = max((-(-size // stride) - 1) * stride + extent - size, 0)
            pads.append((total // 2, total - total // 2))
    else:
        pads = explicit if padding == "EXPLICIT" else [(0, 0), (0, 0)]
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    oh, ow = (xp.shape[1] - eh) // sh + 1, (xp.shape[2] - ew) // sw + 1
    out = np.zeros((n, oh, ow, w.shape[2] * w.shape[3] if depthwise else w.shape[3]))
    for i, j in np.ndindex(oh, ow):
        patch = xp[:, i * sh : i * sh + eh : dh, j * sw : j * sw + ew : dw]
        if depthwise:
            out[:, i, j] = np.einsum("nhwc,hwcm->ncm", patch, w).reshape(n, -1)
        else:
            out[:, i, j] = np.einsum("nhwc,hwco->no", patch, w)
    return out


def _spatial(pair: tuple[int, int], data_format: str | None) -> list[int]:
    """A (height, width) pair as a four-entry list in ``data_format``'s axis order."""
    return [1, 1, *pair] if data_format == "NCHW" else [1, *pair, 1]


def _conv_node_attr(
    strides: tuple[int, int],
    padding: str,
    dilations: tuple[int, int] | None = None,
    explicit: list[tuple[int, int]] | None = None,
    data_format: str | None = None,
    fused: list[str] | None = None,
) -> dict:
    """A conv node's attributes in ``data_format``'s axis order; None leaves one out."""
    attr = {"strides": _ints(_spatial(strides, data_format)), "padding": _s(padding)}
    if dilations is not None:
        attr["dilations"] = _ints(_spatial(dilations, data_format))
    if data_format is not None:
        attr["data_format"] = _s(data_format)
    if explicit is not None:
        flat = [v for pair in explicit for v in pair]
        pairs = [0, 0, 0, 0, *flat] if data_format == "NCHW" else [0, 0, *flat, 0, 0]
        attr["explicit_paddings"] = _ints(pairs)
    if fused:
        attr["fused_ops"] = {"list": {"s": [_s(f)["s"] for f in fused]}}
        attr["num_args"] = {"i": str(sum(f in ("BiasAdd", "Prelu") for f in fused))}
    return attr


CONV_CASES = {  # strides, padding, dilations, explicit paddings, data format
    "strided-same": ((2, 1), "SAME", (1, 1), None, "NHWC"),
    "strided-valid": ((1, 2), "VALID", (1, 1), None, "NHWC"),
    "dilated-same": ((1, 1), "SAME", (2, 1), None, "NHWC"),
    "dilated-valid": ((1, 1), "VALID", (1, 2), None, "NHWC"),
    "explicit": ((2, 2), "EXPLICIT", (1, 1), [(1, 2), (0, 1)], "NHWC"),
    "defaults": ((1, 1), "SAME", None, None, None),
    "nchw-strided": ((2, 1), "VALID", (1, 1), None, "NCHW"),
    "nchw-dilated": ((1, 1), "SAME", (1, 2), None, "NCHW"),
}


def _to_format(x: np.ndarray, data_format: str | None) -> np.ndarray:
    return np.transpose(x, (0, 3, 1, 2)) if data_format == "NCHW" else x


def _from_format(x: np.ndarray, data_format: str | None) -> np.ndarray:
    return np.transpose(x, (0, 2, 3, 1)) if data_format == "NCHW" else x


@pytest.mark.parametrize("depthwise", [False, True], ids=["Conv2D", "DepthwiseConv2dNative"])
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_unfused_convolutions_match_numpy(tmp_path: Path, case: str, depthwise: bool):
    strides, padding, dilations, explicit, data_format = CONV_CASES[case]
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (2, 7, 6, 3)).astype(np.float32)
    # A 3x2 kernel, so height and width cannot be swapped unnoticed; depthwise with two
    # filters per input channel.
    w = rng.normal(0, 1, (3, 2, 3, 2 if depthwise else 4))
    op = "DepthwiseConv2dNative" if depthwise else "Conv2D"
    attr = _conv_node_attr(strides, padding, dilations, explicit, data_format)
    nodes = [_node("x", "Placeholder"), _const("w"), _node("y", op, ["x", "w"], **attr)]
    feeds = {"x": _to_format(x, data_format)}
    (out,), d = _run(tmp_path, nodes, [("w", w, "float32")], feeds, ["y"])
    expected = numpy_conv(x, d["w"], strides, padding, dilations or (1, 1), explicit, depthwise)
    assert out.shape == _to_format(expected, data_format).shape
    np.testing.assert_allclose(_from_format(out, data_format), expected, rtol=1e-4, atol=1e-4)


FUSED_CASES = {  # steps, leakyrelu_alpha (None: the attribute is left out), data format
    "bias": (["BiasAdd"], None, "NHWC"),
    "bias-relu": (["BiasAdd", "Relu"], None, "NHWC"),
    "bias-relu6": (["BiasAdd", "Relu6"], None, "NHWC"),
    "bias-elu": (["BiasAdd", "Elu"], None, "NHWC"),
    "bias-sigmoid": (["BiasAdd", "Sigmoid"], None, "NHWC"),
    "bias-leaky": (["BiasAdd", "LeakyRelu"], 0.3, "NHWC"),
    "bias-leaky-default": (["BiasAdd", "LeakyRelu"], None, "NHWC"),
    "bias-prelu": (["BiasAdd", "Prelu"], None, "NHWC"),
    "prelu-bias": (["Prelu", "BiasAdd"], None, "NHWC"),
    "bias-nchw": (["BiasAdd", "Relu"], None, "NCHW"),
}


def _apply_steps(
    x: np.ndarray, steps: list[str], extra: list[np.ndarray], alpha: float | None
) -> np.ndarray:
    """The fused steps on a channels-last array, each extra input taken in turn."""
    extra = list(extra)
    for step in steps:
        if step == "BiasAdd":
            x = x + extra.pop(0)
        elif step == "Prelu":
            x = _prelu(x, extra.pop(0))
        elif step == "LeakyRelu":
            x = _leaky(x, 0.2 if alpha is None else alpha)
        else:
            x = STEPS[step](x)
    return x


@pytest.mark.parametrize(
    ("case", "op"),
    [
        (case, op)
        for case in sorted(FUSED_CASES)
        for op in ("_FusedConv2D", "FusedDepthwiseConv2dNative", "_FusedMatMul")
        if not (op == "_FusedMatMul" and FUSED_CASES[case][2] == "NCHW")  # no data format
    ],
)
def test_fused_ops_match_numpy(tmp_path: Path, case: str, op: str):
    steps, alpha, data_format = FUSED_CASES[case]
    rng = np.random.default_rng(4)
    channels = 4
    if op == "_FusedMatMul":
        x = rng.normal(0, 2, (3, 5)).astype(np.float32)
        w = rng.normal(0, 1, (5, channels))
        attr = {"fused_ops": {"list": {"s": [_s(f)["s"] for f in steps]}}}
    else:
        x = rng.normal(0, 2, (2, 5, 6, 2)).astype(np.float32)
        w = rng.normal(0, 1, (3, 2, 2, 2 if op == "FusedDepthwiseConv2dNative" else channels))
        attr = _conv_node_attr((2, 1), "SAME", (1, 1), None, data_format, steps)
    if alpha is not None:
        attr["leakyrelu_alpha"] = {"f": alpha}
    # Values far from 0 on both sides and beyond 6, so every activation bends something.
    extras = {"BiasAdd": rng.uniform(-3, 3, channels), "Prelu": rng.uniform(0.1, 0.9, channels)}
    names = [f"e{i}" for i, step in enumerate(steps) if step in extras]
    inputs = [extras[s] for s in steps if s in extras]
    nodes = [_node("x", "Placeholder"), _const("w"), *(_const(n) for n in names)]
    nodes.append(_node("y", op, ["x", "w", *names], **attr))
    weights = [
        ("w", w, "float32"),
        *((n, v, "float32") for n, v in zip(names, inputs, strict=True)),
    ]
    feeds = {"x": x if op == "_FusedMatMul" else _to_format(x, data_format)}
    (out,), d = _run(tmp_path, nodes, weights, feeds, ["y"])
    if op == "_FusedMatMul":
        main = x.astype(np.float64) @ d["w"]
    else:
        main = numpy_conv(x, d["w"], (2, 1), depthwise=op == "FusedDepthwiseConv2dNative")
    assert (main > 6).any() and (main < -1).any()
    expected = _apply_steps(main, steps, [d[n] for n in names], alpha)
    if op != "_FusedMatMul":
        out = _from_format(out, data_format)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("transpose_a", [None, False, True])
@pytest.mark.parametrize("transpose_b", [None, False, True])
def test_matmul_reads_both_transposes(tmp_path: Path, transpose_a, transpose_b):
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, (3, 5)).astype(np.float32), rng.normal(0, 1, (5, 4))
    attr = {}
    if transpose_a is not None:
        attr["transpose_a"] = {"b": transpose_a}
    if transpose_b is not None:
        attr["transpose_b"] = {"b": transpose_b}
    nodes = [_node("x", "Placeholder"), _const("k"), _node("y", "MatMul", ["x", "k"], **attr)]
    stored = b.T if transpose_b else b
    (out,), _ = _run(
        tmp_path, nodes, [("k", stored, "float32")], {"x": a.T if transpose_a else a}, ["y"]
    )
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("data_format", [None, "NHWC", "NCHW"])
def test_bias_add_goes_along_the_channel_axis(tmp_path: Path, data_format):
    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, (2, 3, 4, 5)).astype(np.float32)
    bias = rng.normal(0, 1, 5)
    attr = {} if data_format is None else {"data_format": _s(data_format)}
    nodes = [_node("x", "Placeholder"), _const("b"), _node("y", "BiasAdd", ["x", "b"], **attr)]
    feeds = {"x": _to_format(x, data_format)}
    (out,), d = _run(tmp_path, nodes, [("b", bias, "float32")], feeds, ["y"])
    np.testing.assert_allclose(_from_format(out, data_format), x + d["b"], rtol=1e-6)


@pytest.mark.parametrize("alpha", [None, 0.35])
def test_leaky_relu_and_prelu_scale_the_negative_side(tmp_path: Path, alpha):
    rng = np.random.default_rng(7)
    x = rng.normal(0, 1, (2, 3, 4)).astype(np.float32)
    slopes = rng.uniform(0.1, 0.9, 4)
    leaky = {} if alpha is None else {"alpha": {"f": alpha}}
    nodes = [
        _node("x", "Placeholder"),
        _const("a"),
        _node("leaky", "LeakyRelu", ["x"], **leaky),
        _node("prelu", "Prelu", ["x", "a"]),
    ]
    (lk, pr), d = _run(tmp_path, nodes, [("a", slopes, "float32")], {"x": x}, ["leaky", "prelu"])
    np.testing.assert_allclose(lk, _leaky(x, 0.2 if alpha is None else alpha), rtol=1e-6)
    np.testing.assert_allclose(pr, _prelu(x, d["a"]), rtol=1e-6)


@pytest.mark.parametrize("op", ["Mean", "Sum"])
@pytest.mark.parametrize("keep_dims", [None, False, True])
def test_reductions_over_constant_axes(tmp_path: Path, op: str, keep_dims):
    x = np.random.default_rng(8).normal(0, 1, (2, 3, 4, 5)).astype(np.float32)
    attr = {} if keep_dims is None else {"keep_dims": {"b": keep_dims}}
    nodes = [
        _node("x", "Placeholder"),
        _const("axes"),
        _const("last"),
        _node("y", op, ["x", "axes"], **attr),
        _node("z", op, ["x", "last"], **attr),
    ]
    weights = [("axes", np.array([1, 2]), "int32"), ("last", np.array(-1), "int32")]
    (y, z), _ = _run(tmp_path, nodes, weights, {"x": x}, ["y", "z"])
    reduce = np.mean if op == "Mean" else np.sum
    keep = bool(keep_dims)
    np.testing.assert_allclose(y, reduce(x, axis=(1, 2), keepdims=keep), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z, reduce(x, axis=-1, keepdims=keep), rtol=1e-5, atol=1e-6)


def test_reshape_squeeze_pad_and_concat(tmp_path: Path):
    x = np.random.default_rng(9).normal(0, 1, (2, 1, 1, 3)).astype(np.float32)
    nodes = [
        _node("x", "Placeholder"),
        *(_const(n) for n in ("shape", "pads", "rows", "axis")),
        _node("flat", "Reshape", ["x", "shape"]),
        _node("one", "Squeeze", ["x"], squeeze_dims=_ints([1])),
        _node("all", "Squeeze", ["x"]),
        _node("pad", "Pad", ["x", "pads"]),
        _node("tall", "Pad", ["x", "rows"]),
        _node("cat", "ConcatV2", ["x", "tall", "x", "axis"]),
    ]
    weights = [
        ("shape", np.array([3, -1]), "int32"),
        ("pads", np.array([[0, 0], [1, 2], [0, 0], [0, 1]]), "int32"),
        ("rows", np.array([[0, 0], [1, 2], [0, 0], [0, 0]]), "int32"),
        ("axis", np.array(1), "int32"),
    ]
    outputs = ["flat", "one", "all", "pad", "cat"]
    (flat, one, every, padded, cat), _ = _run(tmp_path, nodes, weights, {"x": x}, outputs)
    np.testing.assert_array_equal(flat, x.reshape(3, 2))
    np.testing.assert_array_equal(one, x[:, 0])
    np.testing.assert_array_equal(every, x[:, 0, 0])
    np.testing.assert_array_equal(padded, np.pad(x, ((0, 0), (1, 2), (0, 0), (0, 1))))
    tall = np.pad(x, ((0, 0), (1, 2), (0, 0), (0, 0)))
    np.testing.assert_array_equal(cat, np.concatenate([x, tall, x], axis=1))


@pytest.mark.parametrize("data_format", [None, "NCHW"])
def test_pools_with_same_padding_and_strides_unlike_their_window(tmp_path: Path, data_format):
    x = np.random.default_rng(10).normal(0, 1, (2, 5, 7, 3)).astype(np.float32)
    attr = {
        "ksize": _ints(_spatial((3, 3), data_format)),
        "strides": _ints(_spatial((2, 2), data_format)),
        "padding": _s("SAME"),
    }
    if data_format is not None:
        attr["data_format"] = _s(data_format)
    nodes = [
        _node("x", "Placeholder"),
        _node("max", "MaxPool", ["x"], **attr),
        _node("avg", "AvgPool", ["x"], **attr),
    ]
    feeds = {"x": _to_format(x, data_format)}
    (big, mean), _ = _run(tmp_path, nodes, [], feeds, ["max", "avg"])
    # SAME: 5x7 in steps of 2 gives 3x4 windows; padding (1, 1) and (1, 1) is left out of
    # both the maximum and the mean.
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=np.nan)
    windows = np.stack(
        [padded[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] for i in range(3) for j in range(4)], 1
    )
    expect_max = np.nanmax(windows, axis=(2, 3)).reshape(2, 3, 4, 3)
    expect_avg = np.nanmean(windows, axis=(2, 3)).reshape(2, 3, 4, 3)
    np.testing.assert_allclose(_from_format(big, data_format), expect_max, rtol=1e-6)
    np.testing.assert_allclose(_from_format(mean, data_format), expect_avg, rtol=1e-5)


# ---- attributes and weights as the format stores them ----


def test_attributes_decode_from_their_json_forms():
    node = Node(
        "n",
        "Op",
        (),
        {
            "names": {"list": {"s": [_s("BiasAdd")["s"], _s("Relu")["s"]]}},
            "ints": _ints([1, -2, 3]),
            "floats": {"list": {"f": [0.5, "1.5"]}},
            "none": {"list": {}},
            "text": _s("SAME"),
            "int": {"i": "-7"},
            "float": {"f": "0.25"},
            "yes": {"b": True},
            "no": {"b": False},
            "type": {"type": "DT_FLOAT"},
        },
    )
    assert node.get("names") == ["BiasAdd", "Relu"]
    assert node.get("ints") == [1, -2, 3]
    assert node.get("floats") == [0.5, 1.5]
    assert node.get("none") == []
    assert node.get("text") == "SAME"
    assert node.get("int") == -7 and isinstance(node.get("int"), int)
    assert node.get("float") == 0.25
    assert node.get("yes") is True and node.get("no") is False
    assert node.get("type") == {"type": "DT_FLOAT"}
    assert node.get("missing") is None and node.get("missing", 3) == 3


def _shards(folder: Path, stem: str, data: bytes, count: int) -> list[str]:
    cut = [round(i * len(data) / count) for i in range(count + 1)]
    names = []
    for i in range(count):
        names.append(f"{stem}-shard{i + 1}of{count}.bin")
        (folder / names[-1]).write_bytes(data[cut[i] : cut[i + 1]])
    return names


def _model_json(folder: Path, nodes: list[dict], manifest: list[dict], **extra) -> Path:
    model = {"format": "graph-model", "modelTopology": {"node": nodes}}
    model["weightsManifest"] = manifest
    model.update(extra)
    (folder / "model.json").write_text(json.dumps(model))
    return folder / "model.json"


def test_every_dtype_and_quantization_decodes_as_tfjs_does_across_groups(tmp_path: Path):
    rng = np.random.default_rng(12)
    flt, ints = rng.normal(0, 3, (2, 3)), np.array([[-5, 0], [7, 2**30]])
    flags = np.array([True, False, False, True])
    half = rng.normal(0, 1, 5)
    q8, q16 = np.array([0, 1, 77, 254, 255], "<u1"), np.array([0, 3, 40000, 65535], "<u2")
    qint = np.array([0, 1, 3, 7, 9, 255], "<u1")  # x 0.5 - 3: halves on both sides of 0
    first = [
        ({"name": "f", "shape": [2, 3], "dtype": "float32"}, flt.astype("<f4").tobytes()),
        ({"name": "i", "shape": [2, 2], "dtype": "int32"}, ints.astype("<i4").tobytes()),
        ({"name": "b", "shape": [4], "dtype": "bool"}, flags.astype("?").tobytes()),
    ]
    second = [
        (
            {"name": "h", "shape": [5], "dtype": "float32", "quantization": {"dtype": "float16"}},
            half.astype("<f2").tobytes(),
        ),
        (
            {
                "name": "q8",
                "shape": [5],
                "dtype": "float32",
                "quantization": {"dtype": "uint8", "scale": 0.1, "min": -1.7},
            },
            q8.tobytes(),
        ),
        (
            {
                "name": "q16",
                "shape": [2, 2],
                "dtype": "float32",
                "quantization": {"dtype": "uint16", "scale": 3e-5, "min": 0.3},
            },
            q16.tobytes(),
        ),
        (
            {
                "name": "qi",
                "shape": [6],
                "dtype": "int32",
                "quantization": {"dtype": "uint8", "scale": 0.5, "min": -3},
            },
            qint.tobytes(),
        ),
    ]
    manifest = []
    for stem, group, count in (("group1", first, 2), ("group2", second, 3)):
        data = b"".join(blob for _, blob in group)
        manifest.append(
            {"paths": _shards(tmp_path, stem, data, count), "weights": [s for s, _ in group]}
        )
    weights = load_graph_model(_model_json(tmp_path, [], manifest)).weights
    expected = {
        "f": flt.astype(np.float32),
        "i": ints.astype(np.int32),
        "b": flags,
        "h": half.astype(np.float16).astype(np.float32),
        # JavaScript: the product and sum in double precision, stored as float32 once.
        "q8": (q8 * 0.1 - 1.7).astype(np.float32),
        "q16": (q16 * 3e-5 + 0.3).astype(np.float32).reshape(2, 2),
        # Math.round: -2.5 -> -2, -1.5 -> -1, 0.5 -> 1, 1.5 -> 2, 124.5 -> 125.
        "qi": np.array([-3, -2, -1, 1, 2, 125], np.int32),
    }
    assert sorted(weights) == sorted(expected)
    for name, value in expected.items():
        assert weights[name].dtype == value.dtype, name
        np.testing.assert_array_equal(weights[name], value, err_msg=name)


def test_unsupported_dtypes_and_quantizations_are_one_line_errors(tmp_path: Path):
    spec = {"name": "c", "shape": [2], "dtype": "complex64"}
    manifest = [{"paths": _shards(tmp_path, "g", bytes(16), 1), "weights": [spec]}]
    with pytest.raises(FaceReconError, match=r"^weight 'c' has dtype 'complex64', which is not"):
        load_graph_model(_model_json(tmp_path, [], manifest))
    spec = {"name": "q", "shape": [2], "dtype": "float32", "quantization": {"dtype": "int8"}}
    manifest = [{"paths": _shards(tmp_path, "g", bytes(2), 1), "weights": [spec]}]
    with pytest.raises(FaceReconError) as caught:
        load_graph_model(_model_json(tmp_path, [], manifest))
    assert str(caught.value) == (
        "weight 'q' is quantized as 'int8', which facerecon's TF.js reader does not support "
        "(supported: float16, uint8, uint16)"
    )


def test_shard_errors_name_the_shard_and_the_byte_counts(tmp_path: Path):
    spec = {"name": "w", "shape": [3], "dtype": "float32"}
    names = _shards(tmp_path, "g", bytes(8), 3)  # named by its last shard
    with pytest.raises(FaceReconError) as caught:
        load_graph_model(_model_json(tmp_path, [], [{"paths": names, "weights": [spec]}]))
    assert str(caught.value) == (
        f"weight shard {tmp_path / names[2]} is too short: weight 'w' needs bytes 0..12, "
        "the shards hold 8"
    )
    names = _shards(tmp_path, "g", bytes(16), 2)
    with pytest.raises(FaceReconError) as caught:
        load_graph_model(_model_json(tmp_path, [], [{"paths": names, "weights": [spec]}]))
    shards = ", ".join(str(tmp_path / n) for n in names)
    assert str(caught.value) == (
        f"weight shard {shards} holds 16 bytes but {tmp_path / 'model.json'} describes 12"
    )
    (tmp_path / "folder.bin").mkdir()
    manifest = [{"paths": ["folder.bin"], "weights": [spec]}]
    with pytest.raises(FaceReconError) as caught:
        load_graph_model(_model_json(tmp_path, [], manifest))
    assert (
        str(caught.value) == f"cannot read weight shard {tmp_path / 'folder.bin'}: Is a directory"
    )


# ---- reading model.json ----


def test_model_json_errors_are_one_line(tmp_path: Path):
    path = tmp_path / "model.json"
    with pytest.raises(FaceReconError) as caught:
        load_graph_model(path)
    assert str(caught.value) == f"TF.js model file {path} does not exist"
    for content, expected in [
        (b"{not json", f"cannot read TF.js model file {path}: Expecting property name"),
        (b"\xff\xfe\x00", f"cannot read TF.js model file {path}: 'utf-8' codec"),
        (b"[1, 2]", f"{path} is not a TF.js graph model (no modelTopology)"),
        (b'{"format": "graph-model"}', f"{path} is not a TF.js graph model (no modelTopology)"),
        (
            b'{"format": "layers-model", "modelTopology": {}}',
            f"{path} is a TF.js 'layers-model', not a graph-model",
        ),
    ]:
        path.write_bytes(content)
        with pytest.raises(FaceReconError) as caught:
            load_graph_model(path)
        assert str(caught.value).startswith(expected), str(caught.value)
    with pytest.raises(FaceReconError, match=f"^cannot read TF.js model file {tmp_path}: "):
        load_graph_model(tmp_path)


def test_a_bare_graph_without_format_weights_inputs_or_attributes_loads(tmp_path: Path):
    nodes = [{"name": "x", "op": "Placeholder"}, {"name": "y", "op": "Neg", "input": ["x"]}]
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"modelTopology": {"node": nodes}}))
    graph = load_graph_model(path)
    assert graph.weights == {} and graph.nodes["x"].inputs == () and graph.nodes["y"].attr == {}
    (out,) = graph.run({"x": tf.constant([1.0, -2.0])}, ["y"])
    np.testing.assert_array_equal(out.numpy(), [-1.0, 2.0])
    path.write_text(json.dumps({"modelTopology": {}}))
    assert load_graph_model(path).nodes == {}


def test_control_inputs_are_dropped_and_output_zero_is_the_node(tmp_path: Path):
    nodes = [
        _node("x", "Placeholder"),
        _node("init", "Placeholder"),
        _node("y", "Neg", ["^init", "x:0"]),
    ]
    path, _ = write_model(tmp_path, nodes, [("unused", np.zeros(1), "float32")])
    graph = load_graph_model(path, ["y"])
    assert graph.nodes["y"].inputs == ("x",)
    (out,) = graph.run({"x": tf.constant([3.0])}, ["y"])
    assert out.numpy().tolist() == [-3.0]
    nodes[2] = _node("y", "Neg", ["x:1"])
    path, _ = write_model(tmp_path, nodes, [])
    with pytest.raises(FaceReconError) as caught:
        load_graph_model(path)
    assert str(caught.value) == (
        f"{path}: node 'y' reads output 1 of 'x'; only single-output ops are supported"
    )
    # A name holds no colon: all after the first one is the output index.
    nodes[2] = _node("y", "Neg", ["x:0:0"])
    path, _ = write_model(tmp_path, nodes, [])
    with pytest.raises(FaceReconError, match="node 'y' reads output 0:0 of 'x';"):
        load_graph_model(path)


def test_graph_errors_name_the_node(tmp_path: Path):
    nodes = [_node("x", "Placeholder"), _const("w"), _node("y", "Mul", ["x", "w"])]
    nodes.append(_node("z", "Add", ["y", "ghost"]))
    path, _ = write_model(tmp_path, nodes, [])
    with pytest.raises(FaceReconError) as caught:
        load_graph_model(path, ["y"])
    assert str(caught.value) == f"{path}: constant 'w' has no entry in the weights manifest"
    with pytest.raises(FaceReconError) as caught:
        load_graph_model(path, ["nowhere"])
    assert str(caught.value) == f"{path}: the graph has no node 'nowhere'"
    path, _ = write_model(tmp_path, nodes, [("w", np.ones(2), "float32")])
    with pytest.raises(FaceReconError) as caught:
        load_graph_model(path)
    assert str(caught.value) == f"{path}: node 'z' reads 'ghost', which is not in the graph"
    graph = load_graph_model(path, ["y"])
    with pytest.raises(FaceReconError) as caught:
        graph.run({}, ["y", "x"])
    assert str(caught.value) == f"{path}: computing y, x needs input 'x', which is not fed"


def test_unsupported_op_and_fused_step_messages_list_what_is_supported(tmp_path: Path):
    nodes = [_node("x", "Placeholder"), _node("e", "Erf", ["x"])]
    path, _ = write_model(tmp_path, nodes, [])
    with pytest.raises(FaceReconError) as caught:
        load_graph_model(path)
    supported = ", ".join(sorted(SUPPORTED_OPS))
    assert str(caught.value) == (
        f"{path}: node 'e' uses op 'Erf', which facerecon's TF.js reader does not support "
        f"(supported: {supported})"
    )
    attr = _conv_node_attr((1, 1), "SAME", fused=["BiasAdd", "Swish"])
    nodes = [_node("x", "Placeholder"), _const("w"), _node("c", "_FusedConv2D", ["x", "w"], **attr)]
    path, _ = write_model(tmp_path, nodes, [("w", np.ones((1, 1, 1, 1)), "float32")])
    with pytest.raises(FaceReconError) as caught:
        load_graph_model(path)
    assert str(caught.value) == (
        f"{path}: node 'c' (_FusedConv2D) fuses 'Swish', which facerecon's TF.js reader does "
        "not support (supported: BiasAdd, Elu, LeakyRelu, Prelu, Relu, Relu6, Sigmoid)"
    )


def test_order_is_depth_first_inputs_before_users_each_node_once(tmp_path: Path):
    nodes = [
        _node("x", "Placeholder"),
        _node("a", "Neg", ["x"]),
        _node("b", "Abs", ["x"]),
        _node("c", "Mul", ["a", "b"]),
        _node("d", "Add", ["c", "a"]),
        _node("e", "Exp", ["b"]),
    ]
    path, _ = write_model(tmp_path, nodes, [])
    graph = load_graph_model(path)
    assert graph.order(["d", "e"]) == ["x", "a", "b", "c", "d", "e"]
    assert graph.order(["e", "d"]) == ["x", "b", "e", "a", "c", "d"]
    assert graph.order(["d"], ["a", "b"]) == ["c", "d"]
    x = np.array([0.5, -1.5], np.float32)
    d, e = graph.run({"x": tf.constant(x)}, ["d", "e"])
    np.testing.assert_allclose(d.numpy(), -x * np.abs(x) - x, rtol=1e-6)
    np.testing.assert_allclose(e.numpy(), np.exp(np.abs(x)), rtol=1e-6)


def test_a_fed_node_stands_in_for_what_it_would_compute(tmp_path: Path):
    nodes = [_node("x", "Placeholder"), _const("w"), _node("y", "Mul", ["x", "w"])]
    path, _ = write_model(tmp_path, nodes, [("w", np.array([2.0, 3.0]), "float32")])
    graph = load_graph_model(path)
    (y,) = graph.run({"x": tf.constant([1.0, 1.0]), "w": tf.constant([5.0, 7.0])}, ["y"])
    assert y.numpy().tolist() == [5.0, 7.0]


def test_constants_are_made_once_and_eagerly(conv_model):
    path, _ = conv_model
    graph = load_graph_model(path, ["pool"])

    @tf.function
    def inside() -> tf.Tensor:
        return graph.constant("w")

    inside()
    made = graph.constant("w")
    assert made is graph.constant("w") and made is graph._constants["w"]
    assert not tf.is_symbolic_tensor(made)
    np.testing.assert_array_equal(made.numpy(), graph.weights["w"])


def test_keras_layers_keep_static_shapes_from_constant_shapes_and_axes(tmp_path: Path):
    nodes = [
        _node("x", "Placeholder"),
        *(_const(n) for n in ("shape", "axes", "pads", "axis")),
        _node("flat", "Reshape", ["x", "shape"]),
        _node("pad", "Pad", ["flat", "pads"]),
        _node("cat", "ConcatV2", ["pad", "pad", "axis"]),
        _node("mean", "Mean", ["cat", "axes"]),
    ]
    weights = [
        ("shape", np.array([-1, 4, 6]), "int32"),
        ("axes", np.array([2]), "int32"),
        ("pads", np.array([[0, 0], [1, 0], [0, 2]]), "int32"),
        ("axis", np.array(1), "int32"),
    ]
    path, _ = write_model(tmp_path, nodes, weights)
    graph = load_graph_model(path)
    image = keras.Input((3, 8))
    out = chain(graph, image, "x", [("flat", "flat"), ("pad", "pad"), ("cat", "cat")])
    out = chain(graph, out, "cat", [("mean", "mean")])
    model = keras.Model(image, out)
    assert model.get_layer("flat").output.shape == (None, 4, 6)
    assert model.get_layer("pad").output.shape == (None, 5, 8)
    assert model.get_layer("cat").output.shape == (None, 10, 8)
    assert model.get_layer("mean").output.shape == (None, 10)
    assert not model.get_layer("mean").trainable
    traced = tf.function(lambda t: graph.run({"x": t}, ["cat", "mean"]))
    concrete = traced.get_concrete_function(tf.TensorSpec((None, 3, 8), tf.float32))
    assert [o.shape.as_list() for o in concrete.outputs] == [[None, 10, 8], [None, 10]]
    x = np.random.default_rng(13).normal(0, 1, (2, 3, 8)).astype(np.float32)
    padded = np.pad(x.reshape(2, 4, 6), ((0, 0), (1, 0), (0, 2)))
    expected = np.concatenate([padded, padded], 1).mean(2)
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5, atol=1e-6)


# ---- TensorFlow's own runtime on the same GraphDef ----


def independent_weights(model_json: Path) -> dict[str, np.ndarray]:
    """The weights of ``model_json``, decoded here from its manifest: plain float32 and int32,
    and float32 quantized to float16 (what faceres and the graph below hold)."""
    model = json.loads(model_json.read_text())
    weights = {}
    for group in model.get("weightsManifest", []):
        data = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            kind = (spec.get("quantization") or {}).get("dtype", spec["dtype"])
            stored = {"float32": "<f4", "int32": "<i4", "float16": "<f2"}[kind]
            value = np.frombuffer(data, stored, int(np.prod(spec["shape"])), offset)
            offset += value.nbytes
            target = np.int32 if spec["dtype"] == "int32" else np.float32
            weights[spec["name"]] = value.astype(target).reshape(spec["shape"])
        assert offset == len(data)
    return weights


def tensorflow_runs(
    model_json: Path, feeds: dict[str, np.ndarray], outputs: list[str]
) -> list[np.ndarray]:
    """``outputs`` as TensorFlow computes them: the GraphDef imported as it is, its constants
    filled from :func:`independent_weights`, run in a session (no code of the reader)."""
    model = json.loads(model_json.read_text())
    weights = independent_weights(model_json)
    graph_def = tf.compat.v1.GraphDef()
    for raw in model["modelTopology"]["node"]:
        node = json_format.ParseDict(raw, graph_def.node.add())
        node.ClearField("device")
        if node.op == "Const":
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights[node.name]))
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        fetches = [f"{name}:0" for name in outputs]
        return session.run(fetches, {f"{name}:0": value for name, value in feeds.items()})


def _typed(node: dict, **types: str) -> dict:
    """``node`` with the type attributes a TF-exported GraphDef carries (T float by default)."""
    for key, value in {"T": "DT_FLOAT", **types}.items():
        node["attr"][key] = {"type": value}
    return node


def test_a_mobilenet_like_graph_gives_what_tensorflow_gives(tmp_path: Path):
    # faceres's op mix: unfused strided Conv2D, batch norm as Mul and Add, ReLU6 as Relu,
    # Minimum and Maximum, DepthwiseConv2dNative, a global Mean and a fused dense head.
    conv = _conv_node_attr((2, 2), "SAME", (1, 1), None, "NHWC")
    conv["explicit_paddings"] = {"list": {}}
    nodes = [
        _node("x", "Placeholder", dtype={"type": "DT_FLOAT"}),
        *(
            _node(n, "Const", dtype={"type": "DT_INT32" if n == "axes" else "DT_FLOAT"})
            for n in ("w", "scale", "shift", "six", "zero", "dw", "axes", "k", "kb")
        ),
        _typed(_node("conv", "Conv2D", ["x", "w"], **conv)),
        _typed(_node("bn/mul", "Mul", ["conv", "scale"])),
        _typed(_node("bn", "Add", ["bn/mul", "shift"])),
        _typed(_node("relu", "Relu", ["bn"])),
        _typed(_node("clip/min", "Minimum", ["relu", "six"])),
        _typed(_node("clip", "Maximum", ["clip/min", "zero"])),
        _typed(_node("depthwise", "DepthwiseConv2dNative", ["clip", "dw"], **conv)),
        _typed(
            _node("pool", "Mean", ["depthwise", "axes"], keep_dims={"b": False}), Tidx="DT_INT32"
        ),
        _typed(
            _node(
                "dense",
                "_FusedMatMul",
                ["pool", "k", "kb"],
                fused_ops={"list": {"s": [_s("BiasAdd")["s"], _s("Relu")["s"]]}},
                num_args={"i": "1"},
                epsilon={"f": 0.0},
                transpose_a={"b": False},
                transpose_b={"b": False},
            )
        ),
        _typed(_node("prob", "Softmax", ["dense"])),
        _typed(_node("gate", "Sigmoid", ["dense"])),
    ]
    rng = np.random.default_rng(14)
    weights = [
        ("w", rng.normal(0, 1, (3, 3, 3, 4)), "float16"),
        ("scale", rng.uniform(0.5, 2, 4), "float16"),
        ("shift", rng.normal(0, 2, 4), "float16"),
        ("six", np.array(6.0), "float32"),
        ("zero", np.array(0.0), "float32"),
        ("dw", rng.normal(0, 1, (3, 3, 4, 1)), "float16"),
        ("axes", np.array([1, 2]), "int32"),
        ("k", rng.normal(0, 1, (4, 5)), "float16"),
        ("kb", rng.normal(0, 1, 5), "float16"),
    ]
    path, _ = write_model(tmp_path, nodes, weights)
    x = rng.normal(0, 1, (2, 9, 8, 3)).astype(np.float32)
    outputs = ["clip", "depthwise", "pool", "dense", "prob", "gate"]
    expected = tensorflow_runs(path, {"x": x}, outputs)
    found = load_graph_model(path, outputs).run({"x": tf.constant(x)}, outputs)
    clip = expected[0]
    assert (clip == 6).any() and (clip == 0).any() and ((clip > 0) & (clip < 6)).any()
    for name, mine, theirs in zip(outputs, found, expected, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs, rtol=1e-5, atol=1e-5, err_msg=name)
