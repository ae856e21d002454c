"""The ONNX reader against onnxruntime: every op it supports, as a small graph made with
onnx's helpers, saved, read back, and run by both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import tensorflow as tf  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from facerecon.core.errors import FaceReconError  # noqa: E402
from facerecon.graphs.onnx import OnnxGraph, load_onnx  # noqa: E402

RNG = np.random.default_rng(11)


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(
        nodes,
        "probe",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in initializers],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _check(tmp_path: Path, nodes, inputs, outputs, initializers=(), opset=17, atol=1e-5):
    model = _model(nodes, inputs, outputs, initializers, opset)
    path = tmp_path / "probe.onnx"
    onnx.save(model, path)
    values = [RNG.normal(size=s).astype(np.float32) for _, s in inputs]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {n: v for (n, _), v in zip(inputs, values, strict=True)})
    graph = load_onnx(path)

    def run(xs):
        return graph.run(dict(zip(graph.parameters, xs, strict=True)), graph.results)

    for fn in (run, tf.function(run)):
        got = fn([tf.constant(v) for v in values])
        for g, e in zip(got, expected, strict=True):
            assert np.asarray(g).shape == e.shape
            np.testing.assert_allclose(np.asarray(g), e, atol=atol, rtol=1e-5)
    return graph


def _w(*shape):
    return RNG.normal(size=shape).astype(np.float32)


N = helper.make_node
IMAGE = [1, 4, 9, 7]
CASES = {
    "unary": (
        [
            N("Relu", ["x"], ["a"]),
            N("Sigmoid", ["a"], ["b"]),
            N("Tanh", ["x"], ["c"]),
            N("Exp", ["c"], ["d"]),
            N("Abs", ["x"], ["e"]),
            N("Sqrt", ["e"], ["f"]),
            N("Neg", ["f"], ["g"]),
            N("Identity", ["g"], ["h"]),
            N("Dropout", ["h"], ["y"]),
        ],
        [("x", [3, 5])],
        ["b", "d", "y"],
        [],
    ),
    "binary": (
        [
            N("Add", ["x", "w"], ["a"]),
            N("Sub", ["a", "x"], ["b"]),
            N("Mul", ["b", "w"], ["c"]),
            N("Div", ["c", "w"], ["d"]),
            N("Abs", ["d"], ["e"]),
            N("Pow", ["e", "two"], ["f"]),
        ],
        [("x", [2, 3, 4])],
        ["d", "f"],
        [("w", _w(3, 1)), ("two", np.float32(1.5))],
    ),
    "variadic": (
        [
            N("Max", ["x", "w", "v"], ["a"]),
            N("Min", ["x", "w"], ["b"]),
            N("Sum", ["x", "w", "v"], ["c"]),
        ],
        [("x", [3, 4])],
        ["a", "b", "c"],
        [("w", _w(4)), ("v", _w(3, 1))],
    ),
    "prelu leaky clip": (
        [
            N("PRelu", ["x", "slope"], ["a"]),
            N("LeakyRelu", ["x"], ["b"], alpha=0.3),
            N("Clip", ["x", "lo", "hi"], ["c"]),
            N("Clip", ["x", "", "hi"], ["d"]),
        ],
        [("x", IMAGE)],
        ["a", "b", "c", "d"],
        [("slope", _w(4, 1, 1)), ("lo", np.float32(-0.5)), ("hi", np.float32(0.4))],
    ),
    "clip opset 6": (
        [N("Clip", ["x"], ["y"], min=-0.2, max=0.3)],
        [("x", [3, 4])],
        ["y"],
        [],
    ),
    "softmax": (
        [N("Softmax", ["x"], ["a"], axis=1), N("Softmax", ["x"], ["b"])],
        [("x", [2, 3, 4])],
        ["a", "b"],
        [],
    ),
    "softmax opset 11": ([N("Softmax", ["x"], ["a"], axis=1)], [("x", [2, 3, 4])], ["a"], []),
    "matmul gemm": (
        [
            N("MatMul", ["x", "w"], ["a"]),
            N("Gemm", ["a", "v", "c"], ["b"], alpha=0.5, beta=2.0, transB=1),
            N("MatMul", ["x", "u"], ["d"]),
        ],
        [("x", [3, 4])],
        ["b", "d"],
        [("w", _w(4, 5)), ("v", _w(6, 5)), ("c", _w(6)), ("u", _w(4))],
    ),
    "batchnorm": (
        [N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
        [("x", IMAGE)],
        ["y"],
        [("s", _w(4)), ("b", _w(4)), ("m", _w(4)), ("v", np.abs(_w(4)) + 0.1)],
    ),
    "conv": (
        [N("Conv", ["x", "w", "b"], ["y"], pads=[1, 0, 0, 2], strides=[2, 1], dilations=[1, 2])],
        [("x", IMAGE)],
        ["y"],
        [("w", _w(6, 4, 3, 3)), ("b", _w(6))],
    ),
    "conv same and groups": (
        [
            N("Conv", ["x", "w"], ["a"], auto_pad="SAME_UPPER", strides=[2, 2], group=2),
            N("Conv", ["x", "d"], ["b"], auto_pad="SAME_LOWER", strides=[2, 2], group=4),
            N("Conv", ["x", "w"], ["c"], auto_pad="VALID", group=2),
        ],
        [("x", IMAGE)],
        ["a", "b", "c"],
        [("w", _w(6, 2, 3, 3)), ("d", _w(4, 1, 2, 2))],
    ),
    "conv transpose": (
        [
            N(
                "ConvTranspose",
                ["x", "w", "b"],
                ["a"],
                strides=[2, 2],
                pads=[1, 0, 0, 1],
                output_padding=[1, 0],
            ),
            N("ConvTranspose", ["x", "g"], ["c"], strides=[1, 2], group=2, dilations=[2, 1]),
        ],
        [("x", IMAGE)],
        ["a", "c"],
        [("w", _w(4, 3, 3, 3)), ("b", _w(3)), ("g", _w(4, 2, 2, 3))],
    ),
    "pools": (
        [
            N("MaxPool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
            N("AveragePool", ["x"], ["b"], kernel_shape=[2, 3], strides=[1, 2], pads=[1, 0, 0, 1]),
            N(
                "AveragePool",
                ["x"],
                ["c"],
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
                count_include_pad=1,
            ),
            N("GlobalAveragePool", ["x"], ["d"]),
            N("GlobalMaxPool", ["x"], ["e"]),
        ],
        [("x", IMAGE)],
        ["a", "b", "c", "d", "e"],
        [],
    ),
    "shape ops": (
        [
            N("Shape", ["x"], ["s"]),
            N("Gather", ["s", "i"], ["n"], axis=0),
            N("Concat", ["n", "m"], ["t"], axis=0),
            N("Reshape", ["x", "t"], ["a"]),
            N("Flatten", ["x"], ["b"], axis=2),
            N("Transpose", ["x"], ["c"], perm=[0, 2, 3, 1]),
            N("Reshape", ["x", "z"], ["d"]),
            N("Shape", ["x"], ["e"], start=1, end=-1),
            N("Cast", ["e"], ["f"], to=TensorProto.FLOAT),
        ],
        [("x", IMAGE)],
        ["a", "b", "c", "d", "f"],
        [("i", np.int64([0])), ("m", np.int64([-1])), ("z", np.int64([0, 0, -1]))],
    ),
    "squeeze unsqueeze 13": (
        [
            N("Unsqueeze", ["x", "ax"], ["a"]),
            N("Squeeze", ["a", "sq"], ["b"]),
            N("Squeeze", ["a"], ["c"]),
        ],
        [("x", [3, 1, 4])],
        ["a", "b", "c"],
        [("ax", np.int64([0, -1])), ("sq", np.int64([0]))],
    ),
    "squeeze unsqueeze 11": (
        [N("Unsqueeze", ["x"], ["a"], axes=[0, 3]), N("Squeeze", ["a"], ["b"], axes=[0])],
        [("x", [3, 1, 4])],
        ["a", "b"],
        [],
    ),
    "reduce 17": (
        [
            N("ReduceMean", ["x"], ["a"], axes=[1, -1], keepdims=0),
            N("ReduceSum", ["x", "ax"], ["b"]),
            N("ReduceMax", ["x"], ["c"], axes=[2]),
        ],
        [("x", IMAGE)],
        ["a", "b", "c"],
        [("ax", np.int64([1]))],
    ),
    "reduce 18": (
        [N("ReduceMean", ["x", "ax"], ["a"], keepdims=0), N("ReduceMax", ["x", "ax"], ["c"])],
        [("x", IMAGE)],
        ["a", "c"],
        [("ax", np.int64([1, 3]))],
    ),
    "constant split": (
        [
            N("Constant", [], ["k"], value=numpy_helper.from_array(_w(1, 4, 1, 1))),
            N("Mul", ["x", "k"], ["a"]),
            N("Split", ["a", "sizes"], ["p", "q"], axis=1),
            N("Split", ["x"], ["r", "s"], axis=2),
        ],
        [("x", [1, 4, 8, 7])],
        ["p", "q", "r", "s"],
        [("sizes", np.int64([1, 3]))],
    ),
}
OPSETS = {"clip opset 6": 6, "softmax opset 11": 11, "squeeze unsqueeze 11": 11, "reduce 18": 18}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_op_matches_onnxruntime(tmp_path: Path, case: str):
    nodes, inputs, outputs, initializers = CASES[case]
    _check(tmp_path, nodes, inputs, outputs, initializers, OPSETS.get(case, 17))


def test_every_supported_op_is_checked_against_onnxruntime():
    seen = {n.op_type for nodes, *_ in CASES.values() for n in nodes}
    assert seen | {"Input", "Initializer", "Tensor"} == OnnxGraph.supported


def test_any_tensor_can_be_read_and_gradients_reach_the_input(tmp_path: Path):
    nodes = [N("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]), N("Relu", ["a"], ["b"]),
             N("ReduceSum", ["b"], ["y"], keepdims=0)]  # fmt: skip
    w = _w(3, 4, 3, 3)
    path = tmp_path / "m.onnx"
    onnx.save(_model(nodes, [("x", IMAGE)], ["y"], [("w", w)]), path)
    graph = load_onnx(path)
    x = tf.Variable(_w(*IMAGE))
    with tf.GradientTape() as tape:
        inner, y = graph.run({"x": x}, [graph.tensor("a"), *graph.results])
    grad = tape.gradient(y, x).numpy()
    # closed form: d sum(relu(conv x)) / dx = conv_transpose(1[conv x > 0])
    mask = tf.cast(inner > 0, tf.float32)
    want = tf.nn.conv2d_transpose(
        tf.transpose(mask, [0, 2, 3, 1]), tf.transpose(w, [2, 3, 1, 0]), [1, 9, 7, 4], 1, "SAME"
    )
    np.testing.assert_allclose(grad, tf.transpose(want, [0, 3, 1, 2]).numpy(), atol=1e-4)


def test_an_unknown_op_is_one_line_naming_the_op_and_the_node(tmp_path: Path):
    path = tmp_path / "m.onnx"
    onnx.save(_model([N("Erf", ["x"], ["y"], name="the_erf")], [("x", [2])], ["y"]), path)
    with pytest.raises(FaceReconError) as error:
        load_onnx(path)
    assert "\n" not in str(error.value)
    assert "node 'the_erf' uses op 'Erf'" in str(error.value)


def test_a_file_that_is_not_onnx_and_a_missing_output_are_one_line(tmp_path: Path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01not a protobuf at all" * 10)
    with pytest.raises(FaceReconError, match="is not an ONNX model"):
        load_onnx(bad)
    with pytest.raises(FaceReconError, match="does not exist"):
        load_onnx(tmp_path / "absent.onnx")
    path = tmp_path / "m.onnx"
    onnx.save(_model([N("Relu", ["x"], ["y"])], [("x", [2])], ["y"]), path)
    with pytest.raises(FaceReconError, match="the graph has no tensor 'logits'"):
        load_onnx(path, outputs=["logits"])


def test_refused_attributes_and_external_data_are_one_line(tmp_path: Path):
    path = tmp_path / "m.onnx"
    node = N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], ceil_mode=1)
    onnx.save(_model([node], [("x", IMAGE)], ["y"]), path)
    with pytest.raises(FaceReconError, match="ceil_mode=1"):
        load_onnx(path)
    model = _model(
        [N("MatMul", ["x", "w"], ["y"])], [("x", [2, 300])], ["y"], [("w", _w(300, 300))]
    )
    onnx.save(model, tmp_path / "ext.onnx", save_as_external_data=True, size_threshold=0)
    with pytest.raises(FaceReconError, match="external data files"):
        load_onnx(tmp_path / "ext.onnx")
