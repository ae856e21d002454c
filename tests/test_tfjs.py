"""The TF.js graph-model reader, on tiny models written here and checked against numpy."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from facerecon.core.errors import FaceReconError  # noqa: E402
from facerecon.graphs.tfjs import GraphLayer, chain, load_graph_model  # noqa: E402

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
        return spec, q.tobytes(), (q.astype(np.float32) * np.float32(scale) + np.float32(low))
    if how == "int32":
        spec["dtype"] = "int32"
        return spec, value.astype("<i4").tobytes(), value.astype(np.int32)
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
