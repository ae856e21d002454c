"""An ONNX graph made for one image (its reshape writes the batch of 1 out) still embeds a
batch, image by image, as onnxruntime does one at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from facerecon import api  # noqa: E402
from facerecon.ops.forward import forward_for  # noqa: E402


def _batch_of_one(path: Path, size: int = 16, dim: int = 6) -> Path:
    """Conv, ReLU, then Reshape to [1, -1] (what a batch-1 export of `x.view(1, -1)`
    writes) and a Gemm: a batch of N through it would be one row of N images."""
    rng = np.random.default_rng(8)
    conv = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "conv")
    flat = 4 * (size // 2) ** 2
    fc = numpy_helper.from_array(rng.normal(size=(dim, flat)).astype(np.float32) * 0.05, "fc")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["image", "conv"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["features"], transB=1),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, dim])
    graph = helper.make_graph(nodes, "one", [image], [features], [conv, fc, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_a_batch_one_graph_embeds_a_batch_image_by_image(tmp_path: Path):
    path = _batch_of_one(tmp_path / "one.onnx")
    model = api.model("onnx", path=str(path))
    chips = np.random.default_rng(2).random((3, 16, 16, 3)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = ((chips * 255 - 127.5) / 127.5).transpose(0, 3, 1, 2).astype(np.float32)
    want = np.concatenate([session.run(None, {"image": row[None]})[0] for row in x])
    np.testing.assert_allclose(model.network()(chips).numpy(), want, atol=1e-4)
    # the tap and the gradient to the pixels go image by image too
    embedding, taps = forward_for(model, ["t_r"]).numpy(chips)
    np.testing.assert_allclose(embedding, want, atol=1e-4)
    assert taps["t_r"].shape == (3, 4, 8, 8)
    pixels = tf.Variable(chips)
    with tf.GradientTape() as tape:
        first = tf.reduce_sum(model.network()(pixels)[0])
    grad = tape.gradient(first, pixels).numpy()
    assert np.abs(grad[0]).max() > 0 and not grad[1:].any()  # image 0 only, no mixing
