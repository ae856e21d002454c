"""The OpenVINO IR reader against the OpenVINO runtime itself: every op it supports, built as
a small IR with OpenVINO's own graph API, saved, read back, and run by both."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
import openvino.opset13 as ops  # noqa: E402
import tensorflow as tf  # noqa: E402

from facerecon.core.errors import FaceReconError  # noqa: E402
from facerecon.graphs.openvino import IRGraph, load_ir  # noqa: E402

RNG = np.random.default_rng(7)
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO's CPU default may be bf16


def _const(values) -> object:
    return ops.constant(np.asarray(values))


def _save(tmp_path: Path, build: Callable, shapes: list[tuple[int, ...]]) -> tuple[Path, list]:
    """An IR of ``build(*parameters)`` saved under ``tmp_path``; returns it and its inputs."""
    params = [ops.parameter(list(s), np.float32, name=f"x{i}") for i, s in enumerate(shapes)]
    outputs = build(*params)
    outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
    model = ov.Model([ops.result(o) for o in outputs], params, "probe")
    path = tmp_path / "probe.xml"
    ov.save_model(model, path, compress_to_fp16=False)
    return path, [RNG.normal(size=s).astype(np.float32) for s in shapes]


def _reference(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    compiled = ov.Core().compile_model(ov.Core().read_model(path), "CPU", F32)
    result = compiled(inputs)
    return [result[o] for o in compiled.outputs]


def _ours(path: Path, inputs: list[np.ndarray], traced: bool) -> list[np.ndarray]:
    graph = load_ir(path)
    feeds = dict(zip(graph.parameters, inputs, strict=True))

    def run(values):
        return graph.run(dict(zip(feeds, values, strict=True)), graph.results)

    if traced:
        run = tf.function(run)
    return [np.asarray(v) for v in run([tf.constant(v) for v in feeds.values()])]


def _check(tmp_path: Path, build: Callable, *shapes: tuple[int, ...]) -> None:
    path, inputs = _save(tmp_path, build, list(shapes))
    expected = _reference(path, inputs)
    for traced in (False, True):
        got = _ours(path, inputs, traced)
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert g.shape == e.shape
            np.testing.assert_allclose(g, e, atol=1e-4, rtol=1e-5)


IMAGE = (2, 6, 9, 7)  # batch, channels, height, width: odd sizes catch swapped axes
W = RNG.normal(size=(4, 6, 3, 3)).astype(np.float32)
DEPTHWISE = RNG.normal(size=(6, 1, 1, 3, 3)).astype(np.float32)
GROUPED = RNG.normal(size=(2, 4, 3, 3, 2)).astype(np.float32)  # 2 groups: 3 in, 4 out each
DECONV = RNG.normal(size=(6, 3, 3, 2)).astype(np.float32)
DEPTHWISE_DECONV = RNG.normal(size=(6, 1, 1, 2, 1)).astype(np.float32)
GROUPED_DECONV = RNG.normal(size=(2, 3, 2, 2, 3)).astype(np.float32)

CASES: dict[str, tuple[Callable, tuple[tuple[int, ...], ...]]] = {
    "Add": (lambda a, b: ops.add(a, b), ((2, 3, 4), (3, 1))),
    "Subtract": (lambda a, b: ops.subtract(a, b), ((2, 3, 4), (4,))),
    "Multiply": (lambda a, b: ops.multiply(a, b), ((2, 3, 4), (2, 1, 4))),
    "Divide": (lambda a: ops.divide(a, _const(np.float32([2.0, -4.0, 0.5]))), ((5, 3),)),
    "Power": (lambda a: ops.power(ops.abs(a), _const(np.float32([[1.5]]))), ((3, 4),)),
    "Maximum": (lambda a, b: ops.maximum(a, b), ((3, 4), (3, 4))),
    "Minimum": (lambda a, b: ops.minimum(a, b), ((3, 4), (1, 4))),
    "Relu": (lambda a: ops.relu(a), ((3, 5),)),
    "Sigmoid": (lambda a: ops.sigmoid(a), ((3, 5),)),
    "Tanh": (lambda a: ops.tanh(a), ((3, 5),)),
    "Exp": (lambda a: ops.exp(a), ((3, 5),)),
    "Sqrt": (lambda a: ops.sqrt(ops.abs(a)), ((3, 5),)),
    "Negative": (lambda a: ops.negative(a), ((3, 5),)),
    "Clamp": (lambda a: ops.clamp(a, -0.3, 0.7), ((3, 5),)),
    "Convert": (
        lambda a: ops.convert(ops.convert(ops.multiply(a, _const(np.float32(4))), "i32"), "f32"),
        ((3, 5),),
    ),
    "PReLU per channel": (
        lambda a: ops.prelu(a, _const(np.float32([0.1, -0.5, 2.0]))),
        ((2, 3, 4, 5),),
    ),
    "PReLU scalar": (lambda a: ops.prelu(a, _const(np.float32([0.2]))), ((2, 7),)),
    "PReLU 2-D": (lambda a: ops.prelu(a, _const(np.float32([0.1, 0.3, 0.5, 0.7]))), ((3, 4),)),
    "MatMul": (lambda a, b: ops.matmul(a, b, False, False), ((3, 4), (4, 5))),
    "MatMul transposed": (lambda a, b: ops.matmul(a, b, True, True), ((4, 3), (5, 4))),
    "MatMul batched": (lambda a, b: ops.matmul(a, b, False, True), ((2, 3, 4), (2, 5, 4))),
    "ReduceMean": (lambda a: ops.reduce_mean(a, _const(np.int64([1, -1])), True), ((2, 3, 4),)),
    "ReduceSum": (lambda a: ops.reduce_sum(a, _const(np.int64([0])), False), ((2, 3, 4),)),
    "ShapeOf Gather Concat Reshape": (
        lambda a: ops.reshape(
            a,
            ops.concat(
                [
                    ops.gather(ops.shape_of(a), _const(np.int64([-3])), _const(np.int64(0))),
                    _const(np.int64([-1])),
                ],
                0,
            ),
            False,
        ),
        ((2, 3, 4),),
    ),
    "Gather": (
        lambda a: ops.gather(a, _const(np.int64([[2, 0], [-1, 1]])), _const(1)),
        ((2, 3, 4),),
    ),
    "Gather batch_dims": (
        lambda a: ops.gather(a, _const(np.int64([[2, 0], [1, 1]])), _const(1), 1),
        ((2, 3, 4),),
    ),
    "Unsqueeze Squeeze": (
        lambda a: ops.squeeze(ops.unsqueeze(a, _const(np.int64([0, -1]))), _const(np.int64([0]))),
        ((3, 4),),
    ),
    "Squeeze all": (lambda a: ov.opset15.squeeze(a), ((1, 3, 1, 4),)),
    "Squeeze empty axes": (lambda a: ops.squeeze(a, _const(np.int64([]))), ((1, 3, 1, 4),)),
    "Reshape special zero": (
        lambda a: ops.reshape(a, _const(np.int64([0, -1, 2])), True),
        ((3, 4, 2),),
    ),
    "Transpose": (lambda a: ops.transpose(a, _const(np.int64([2, 0, 1]))), ((2, 3, 4),)),
    "Broadcast numpy": (lambda a: ops.broadcast(a, _const(np.int64([2, 3, 4]))), ((3, 1),)),
    "Broadcast bidirectional": (
        lambda a: ops.broadcast(a, _const(np.int64([2, 1, 1])), broadcast_spec="BIDIRECTIONAL"),
        ((3, 4),),
    ),
    "Tile": (lambda a: ops.tile(a, _const(np.int64([2, 1, 3]))), ((2, 3, 2),)),
    "Tile fewer repeats": (lambda a: ops.tile(a, _const(np.int64([3]))), ((2, 3, 2),)),
    "Tile more repeats": (lambda a: ops.tile(a, _const(np.int64([2, 1, 2]))), ((3, 2),)),
    "Split": (lambda a: list(ops.split(a, _const(np.int64(-1)), 2).outputs()), ((2, 3, 4),)),
    "VariadicSplit": (
        lambda a: list(
            ops.variadic_split(a, _const(np.int64(1)), _const(np.int64([1, -1, 2]))).outputs()
        ),
        ((2, 6, 4),),
    ),
    "Convolution": (
        lambda a: ops.convolution(a, _const(W), [1, 1], [0, 1], [2, 0], [1, 1]),
        (IMAGE,),
    ),
    "Convolution strided dilated": (
        lambda a: ops.convolution(a, _const(W), [2, 3], [1, 1], [1, 1], [2, 1]),
        (IMAGE,),
    ),
    "Convolution same_upper": (
        lambda a: ops.convolution(a, _const(W), [2, 2], [0, 0], [0, 0], [1, 1], "same_upper"),
        (IMAGE,),
    ),
    "Convolution same_lower": (
        lambda a: ops.convolution(a, _const(W), [2, 2], [0, 0], [0, 0], [1, 1], "same_lower"),
        (IMAGE,),
    ),
    "Convolution valid": (
        lambda a: ops.convolution(a, _const(W), [1, 2], [3, 3], [3, 3], [1, 1], "valid"),
        (IMAGE,),
    ),
    "GroupConvolution depthwise": (
        lambda a: ops.group_convolution(a, _const(DEPTHWISE), [1, 1], [1, 0], [1, 2], [1, 1]),
        (IMAGE,),
    ),
    "GroupConvolution grouped": (
        lambda a: ops.group_convolution(a, _const(GROUPED), [2, 1], [1, 1], [0, 0], [1, 1]),
        (IMAGE,),
    ),
    "ConvolutionBackpropData": (
        lambda a: ops.convolution_backprop_data(
            a,
            _const(DECONV),
            [2, 2],
            pads_begin=[0, 1],
            pads_end=[1, 0],
            dilations=[1, 1],
            output_padding=[1, 0],
        ),
        (IMAGE,),
    ),
    "ConvolutionBackpropData dilated": (
        lambda a: ops.convolution_backprop_data(
            a, _const(DECONV), [1, 2], pads_begin=[0, 0], pads_end=[0, 0], dilations=[2, 1]
        ),
        (IMAGE,),
    ),
    "GroupConvolutionBackpropData depthwise": (
        lambda a: ops.group_convolution_backprop_data(
            a, _const(DEPTHWISE_DECONV), [2, 1], pads_begin=[0, 0], pads_end=[0, 0]
        ),
        (IMAGE,),
    ),
    "GroupConvolutionBackpropData grouped": (
        lambda a: ops.group_convolution_backprop_data(
            a, _const(GROUPED_DECONV), [1, 2], pads_begin=[1, 0], pads_end=[0, 1]
        ),
        (IMAGE,),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_op_matches_the_openvino_runtime(tmp_path: Path, case: str):
    build, shapes = CASES[case]
    _check(tmp_path, build, *shapes)


def test_every_supported_op_is_checked_against_the_runtime(tmp_path: Path):
    seen: set[str] = set()
    for i, (build, shapes) in enumerate(CASES.values()):
        folder = tmp_path / str(i)
        folder.mkdir()
        path, _ = _save(folder, build, list(shapes))
        seen |= {node.op for node in load_ir(path).nodes.values()}
    assert seen == IRGraph.supported


def test_a_channels_first_layout_is_kept_through_a_convolution_chain(tmp_path: Path):
    def build(a):
        x = ops.convolution(a, _const(W), [1, 1], [1, 1], [1, 1], [1, 1])
        x = ops.prelu(x, _const(np.float32([0.1, 0.2, 0.3, 0.4])))
        kernel = _const(RNG.normal(size=(4, 1, 1, 1, 2)).astype(np.float32))
        x = ops.group_convolution_backprop_data(
            x, kernel, [1, 2], pads_begin=[0, 0], pads_end=[0, 0]
        )
        return ops.reduce_mean(x, _const(np.int64([2, 3])), False)

    _check(tmp_path, build, IMAGE)


def test_the_gradient_reaches_the_input_and_matches_finite_differences(tmp_path: Path):
    def build(a):
        x = ops.convolution(a, _const(W), [1, 1], [1, 1], [1, 1], [1, 1])
        return ops.reduce_sum(ops.multiply(x, x), _const(np.int64([0, 1, 2, 3])), False)

    path, (x,) = _save(tmp_path, build, [IMAGE])
    graph = load_ir(path)
    x = tf.Variable(x.astype(np.float64).astype(np.float32))
    with tf.GradientTape() as tape:
        (y,) = graph.run({"x0": x}, graph.results)
    grad = tape.gradient(y, x).numpy()
    # Closed form: d/dx sum(conv(x)^2) = 2 conv_transpose(conv(x)), checked at one pixel
    # by a central difference in float64 numpy.
    x64 = x.numpy().astype(np.float64)
    w64 = W.astype(np.float64)

    def energy(image):
        padded = np.pad(image, ((0, 0), (0, 0), (1, 1), (1, 1)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
        return float((np.einsum("bchwij,ocij->bohw", windows, w64) ** 2).sum())

    for index in [(0, 0, 0, 0), (1, 3, 4, 6), (0, 5, 8, 2)]:
        step = np.zeros_like(x64)
        step[index] = 1e-4
        numeric = (energy(x64 + step) - energy(x64 - step)) / 2e-4
        np.testing.assert_allclose(grad[index], numeric, rtol=1e-3)


def test_a_batch_of_any_size_runs_through_shape_arithmetic(tmp_path: Path):
    # The IR is written for batch 2; its reshape target comes from ShapeOf, as in generators.
    def build(a):
        shape = ops.concat(
            [ops.gather(ops.shape_of(a), _const(np.int64([0])), _const(0)), _const(np.int64([-1]))],
            0,
        )
        return ops.reshape(a, shape, False)

    path, _ = _save(tmp_path, build, [(2, 3, 4)])
    graph = load_ir(path)
    x = RNG.normal(size=(5, 3, 4)).astype(np.float32)
    (out,) = tf.function(lambda v: graph.run({"x0": v}, graph.results))(tf.constant(x))
    np.testing.assert_array_equal(out.numpy(), x.reshape(5, 12))
    assert out.shape == (5, 12)  # traced with static shapes


def test_a_special_zero_reshape_to_a_higher_rank_runs_at_an_unknown_batch(tmp_path: Path):
    # A 0 keeps the batch, which a trace of any batch size knows only at run time.
    path, _ = _save(
        tmp_path, lambda a: ops.reshape(a, _const(np.int64([0, 6, 1, 1])), True), [(2, 6)]
    )
    graph = load_ir(path)
    traced = []

    def run(v):
        (out,) = graph.run({"x0": v}, graph.results)
        traced.append(out.shape.as_list())
        return out

    run = tf.function(run, input_signature=[tf.TensorSpec((None, 6), tf.float32)])
    x = RNG.normal(size=(3, 6)).astype(np.float32)
    np.testing.assert_array_equal(run(tf.constant(x)).numpy(), x.reshape(3, 6, 1, 1))
    assert traced == [[None, 6, 1, 1]]  # the axes it knows stay known for the ops after it


def test_an_unknown_op_is_one_line_naming_the_op_and_the_layer(tmp_path: Path):
    params = [ops.parameter([2, 3], np.float32, name="x0")]
    soft = ops.softmax(params[0], 1, name="probabilities")
    ov.save_model(ov.Model([ops.result(soft)], params), tmp_path / "m.xml")
    with pytest.raises(FaceReconError) as error:
        load_ir(tmp_path / "m.xml")
    message = str(error.value)
    assert "\n" not in message
    assert "'probabilities'" in message and "'SoftMax'" in message


def test_an_unsupported_attribute_value_is_refused_at_load(tmp_path: Path):
    path, _ = _save(tmp_path, lambda a, b: ops.add(a, b), [(2, 3), (2, 3)])
    text = path.read_text().replace('auto_broadcast="numpy"', 'auto_broadcast="pdpd"')
    path.write_text(text)
    with pytest.raises(FaceReconError, match=r"auto_broadcast='pdpd'.*numpy, none"):
        load_ir(path)


def test_a_truncated_weights_file_names_the_file_and_the_constant(tmp_path: Path):
    path, _ = _save(tmp_path, lambda a: ops.matmul(a, _const(W[0, 0]), False, False), [(2, 3)])
    weights = path.with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:-5])
    with pytest.raises(FaceReconError, match=rf"{weights.name} is too short: constant"):
        load_ir(path)


def test_a_missing_weights_file_and_a_broken_xml_are_one_line(tmp_path: Path):
    path, _ = _save(tmp_path, lambda a: ops.relu(a), [(2, 3)])
    path.with_suffix(".bin").unlink()
    with pytest.raises(FaceReconError, match="weights file .*probe.bin does not exist"):
        load_ir(path)
    path.write_text(path.read_text()[:200])
    with pytest.raises(FaceReconError, match="cannot read OpenVINO IR file"):
        load_ir(path)
    with pytest.raises(FaceReconError, match="does not exist"):
        load_ir(tmp_path / "absent.xml")


def test_entities_and_doctype_declarations_are_refused(tmp_path: Path):
    path = tmp_path / "bomb.xml"
    path.write_text(
        '<?xml version="1.0"?><!DOCTYPE net [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><net version="10">&b;</net>'
    )
    path.with_suffix(".bin").write_bytes(b"")
    with pytest.raises(FaceReconError, match="cannot read OpenVINO IR file"):
        load_ir(path)


def test_a_file_that_is_not_an_ir_graph_is_refused(tmp_path: Path):
    path = tmp_path / "other.xml"
    path.write_text('<net version="7"><layers/></net>')
    with pytest.raises(FaceReconError, match="not an OpenVINO IR v10 or v11 graph"):
        load_ir(path)


def test_a_constant_whose_size_disagrees_with_its_shape_is_refused(tmp_path: Path):
    path, _ = _save(tmp_path, lambda a: ops.add(a, _const(np.float32([1, 2, 3]))), [(2, 3)])
    text = path.read_text()
    path.write_text(text.replace('shape="3"', 'shape="4"', 1))
    with pytest.raises(FaceReconError, match=r"constant .* of shape \[4\] \(f32\) says 12 bytes"):
        load_ir(path)


@pytest.mark.parametrize(
    ("kernel", "strides", "dilations"),
    [((2, 1), (2, 1), (1, 1)), ((3, 2), (1, 3), (1, 1)), ((3, 3), (2, 1), (2, 1))],
)
def test_depthwise_transpose_with_unequal_strides_matches_a_numpy_scatter(
    kernel, strides, dilations
) -> None:
    """MobileStyleGAN's IDWT upsampling: TF's depthwise gradient op refuses these strides."""
    from facerecon.graphs import ops as graph_ops

    rng = np.random.default_rng(3)
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    k = rng.standard_normal((kh, kw, 1, 3)).astype(np.float32)
    out = graph_ops.conv2d_transpose(
        tf.constant(x), tf.constant(k), strides, dilations, ((0, 0), (0, 0)), groups=3
    )
    expected = np.zeros((2, 3 * sh + dh * (kh - 1) + 1, 4 * sw + dw * (kw - 1) + 1, 3))
    for i, j, a, b in np.ndindex(4, 5, kh, kw):
        expected[:, i * sh + a * dh, j * sw + b * dw] += x[:, i, j] * k[a, b, 0]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
