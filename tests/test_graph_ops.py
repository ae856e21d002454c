"""The graph and the ops every reader shares (facerecon.graphs.graph, facerecon.graphs.ops):
each convolution against a direct numpy sum, the SAME pads against a brute-force search, and
the graph's order, checks, runs, cuts and errors on small graphs whose answers are known."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from facerecon.core.errors import FaceReconError  # noqa: E402
from facerecon.graphs import ops  # noqa: E402
from facerecon.graphs.graph import Graph, GraphLayer, Node, chain, fold_static  # noqa: E402

RNG = np.random.default_rng(5)
SOURCE = Path("probe.json")


def _normal(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


# --- numpy references: channels first, direct sums over the kernel ----------------------


def conv_reference(x, w, strides, dilations, pads, groups=1):
    """out[n, o, i, j] = sum over c, a, b of padded x[n, g * I + c, i * sh + a * dh,
    j * sw + b * dw] * w[o, c, a, b], for NCHW x, (O, I, kh, kw) w and g = o // (O / groups)."""
    (top, bottom), (left, right) = pads
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, _, height, width = x.shape
    outs, per_group, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    oh = (height - dh * (kh - 1) - 1) // sh + 1
    ow = (width - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, outs, oh, ow))
    for o in range(outs):
        g = o // (outs // groups)
        for i, j, a, b in itertools.product(range(oh), range(ow), range(kh), range(kw)):
            window = x[:, g * per_group : (g + 1) * per_group, i * sh + a * dh, j * sw + b * dw]
            out[:, o, i, j] += window @ w[o, :, a, b]
    return out


def conv_transpose_reference(x, w, strides, dilations, pads, output_padding=(0, 0), groups=1):
    """Each input pixel x[n, c, i, j] adds x * w[c, :, a, b] to the outputs of its group at
    (i * sh + a * dh, j * sw + b * dw); the result, grown by ``output_padding`` rows and
    columns at the end, is cropped by ``pads``. NCHW x, (I, O / groups, kh, kw) w."""
    x = np.asarray(x, np.float64)
    n, channels, height, width = x.shape
    _, per_group, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    full_h = (height - 1) * sh + dh * (kh - 1) + 1 + output_padding[0]
    full_w = (width - 1) * sw + dw * (kw - 1) + 1 + output_padding[1]
    out = np.zeros((n, per_group * groups, full_h, full_w))
    for c in range(channels):
        g = c // (channels // groups)
        for i, j, a, b in itertools.product(range(height), range(width), range(kh), range(kw)):
            out[:, g * per_group : (g + 1) * per_group, i * sh + a * dh, j * sw + b * dw] += (
                x[:, c, i, j][:, None] * w[c, :, a, b]
            )
    (top, bottom), (left, right) = pads
    return out[:, :, top : full_h - bottom, left : full_w - right]


def nchw(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, 3, 1, 2))


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, 2, 3, 1))


def hw_last(kernel: np.ndarray) -> np.ndarray:
    """An HWIO (or HWOI) kernel as the reference's (O, I, kh, kw) (or (I, O, kh, kw))."""
    return np.transpose(kernel, (3, 2, 0, 1))


def close(got: tf.Tensor, expected: np.ndarray) -> None:
    got = np.asarray(got)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


# --- layouts and PReLU ------------------------------------------------------------------


def test_layout_helpers_move_the_channel_axis():
    x = _normal(2, 3, 4, 5)
    last = ops.to_channels_last(tf.constant(x))
    np.testing.assert_array_equal(last, np.moveaxis(x, 1, -1))
    first = ops.to_channels_first(tf.constant(x))
    np.testing.assert_array_equal(first, np.moveaxis(x, -1, 1))
    np.testing.assert_array_equal(ops.to_channels_first(last), x)


def test_prelu_keeps_positives_and_scales_negatives_per_channel():
    x = _normal(2, 3, 4, 5)
    x[0, 0, 0] = 0.0
    alpha = np.float32([0.25, -1.5, 3.0, 0.0, 1.0])
    got = ops.prelu(tf.constant(x), tf.constant(alpha))
    np.testing.assert_allclose(got, np.where(x >= 0, x, alpha * x), rtol=1e-6, atol=1e-7)


# --- convolutions -----------------------------------------------------------------------

# (input channels, kernel HWIO, groups, strides, dilations, pads): odd, unequal sizes so a
# swapped axis changes a shape or a value
CONVOLUTIONS = {
    "plain": (3, (3, 2, 3, 4), 1, (2, 1), (1, 2), ((1, 0), (2, 1))),
    "plain 1x1 one output": (3, (1, 1, 3, 1), 1, (1, 1), (1, 1), ((0, 0), (0, 0))),
    "depthwise": (4, (3, 2, 1, 4), 4, (2, 2), (1, 1), ((0, 2), (1, 1))),
    "depthwise multiplier 2": (4, (2, 3, 1, 8), 4, (1, 1), (1, 1), ((1, 1), (0, 2))),
    "two groups": (6, (3, 2, 3, 4), 2, (1, 1), (1, 2), ((2, 0), (1, 0))),
    "three groups": (6, (2, 2, 2, 3), 3, (2, 2), (1, 1), ((0, 1), (1, 1))),
    "depthwise dilated": (4, (3, 2, 1, 4), 4, (1, 1), (2, 1), ((0, 2), (1, 1))),
    "depthwise unequal strides": (4, (3, 2, 1, 8), 4, (1, 2), (1, 1), ((1, 0), (0, 1))),
}


def _check_conv(case: tuple) -> None:
    channels, shape, groups, strides, dilations, pads = case
    x, kernel = _normal(2, 7, 8, channels), _normal(*shape)
    expected = nhwc(conv_reference(nchw(x), hw_last(kernel), strides, dilations, pads, groups))
    got = ops.conv2d(tf.constant(x), tf.constant(kernel), strides, dilations, pads, groups)
    close(got, expected)


@pytest.mark.parametrize(
    "case",
    sorted(CONVOLUTIONS),
)
def test_conv2d_is_the_direct_sum(case: str):
    _check_conv(CONVOLUTIONS[case])


def test_conv2d_groups_default_to_one():
    x, kernel = _normal(1, 5, 6, 2), _normal(3, 3, 2, 3)
    pads = ((1, 1), (0, 2))
    got = ops.conv2d(tf.constant(x), tf.constant(kernel), (1, 1), (1, 1), pads)
    close(got, nhwc(conv_reference(nchw(x), hw_last(kernel), (1, 1), (1, 1), pads)))


@pytest.mark.parametrize("case", ["plain", "depthwise", "two groups"])
def test_conv2d_traces_with_an_unknown_batch(case: str):
    channels, shape, groups, strides, dilations, pads = CONVOLUTIONS[case]
    x, kernel = _normal(3, 7, 8, channels), _normal(*shape)
    spec = tf.TensorSpec([None, 7, 8, channels], tf.float32)
    run = tf.function(
        lambda v: ops.conv2d(v, tf.constant(kernel), strides, dilations, pads, groups),
        input_signature=[spec],
    )
    expected = nhwc(conv_reference(nchw(x), hw_last(kernel), strides, dilations, pads, groups))
    close(run(tf.constant(x)), expected)


@pytest.mark.parametrize(
    "sizes, strides, dilations, kernel",
    [
        ((7, 8), (2, 3), (1, 1), (3, 2)),
        ((9, 6), (1, 2), (2, 1), (3, 3)),
        ((5, 5), (3, 1), (1, 2), (4, 2)),
    ],
)
def test_same_upper_pads_give_tensorflows_same_convolution(sizes, strides, dilations, kernel):
    x, w = _normal(2, *sizes, 3), _normal(*kernel, 3, 2)
    pads = ops.same_pads(sizes, strides, dilations, kernel, upper=True)
    got = ops.conv2d(tf.constant(x), tf.constant(w), strides, dilations, pads)
    if strides != (1, 1) and dilations != (1, 1):
        # tf.nn.conv2d takes no strides with dilations: dilate the kernel with zeros instead
        big = np.zeros(
            ((kernel[0] - 1) * dilations[0] + 1, (kernel[1] - 1) * dilations[1] + 1, 3, 2)
        )
        big[:: dilations[0], :: dilations[1]] = w
        expected = tf.nn.conv2d(x, big.astype(np.float32), [1, *strides, 1], "SAME")
    else:
        expected = tf.nn.conv2d(x, w, [1, *strides, 1], "SAME", dilations=[1, *dilations, 1])
    close(got, expected.numpy())


def _same_by_search(size: int, stride: int, dilation: int, kernel: int, upper: bool):
    """The least total padding that leaves ceil(size / stride) outputs, found by counting the
    window positions of every total in turn; an odd total's extra pixel at the end if upper."""
    span = dilation * (kernel - 1) + 1
    wanted = len(range(0, size, stride))
    total = 0
    while len(range(0, size + total - span + 1, stride)) < wanted:
        total += 1
    begin = total // 2 if upper else (total + 1) // 2
    return begin, total - begin


def test_same_pads_are_the_least_padding_that_keeps_ceil_size_over_stride():
    for size, stride, dilation, kernel in itertools.product(
        range(1, 10), range(1, 4), range(1, 3), range(1, 5)
    ):
        for upper in (True, False):
            expected = [
                _same_by_search(size, stride, dilation, kernel, upper),
                _same_by_search(size + 3, stride + 1, 1, kernel + 1, upper),
            ]
            got = ops.same_pads(
                (size, size + 3), (stride, stride + 1), (dilation, 1), (kernel, kernel + 1), upper
            )
            assert [tuple(p) for p in got] == expected, (size, stride, dilation, kernel, upper)


# (input channels, kernel HWOI, groups, strides, dilations, pads, output padding)
TRANSPOSES = {
    "plain": (3, (3, 2, 4, 3), 1, (2, 3), (1, 1), ((1, 0), (0, 2)), (1, 2)),
    "plain end pads beyond the output padding": (
        2, (2, 3, 3, 2), 1, (2, 2), (1, 1), ((0, 2), (1, 3)), (1, 1),
    ),
    "plain one output": (3, (2, 2, 1, 3), 1, (2, 1), (1, 1), ((0, 1), (1, 0)), (0, 0)),
    "plain dilated": (3, (3, 2, 2, 3), 1, (1, 2), (2, 1), ((0, 0), (1, 0)), (0, 0)),
    "depthwise": (4, (3, 2, 1, 4), 4, (2, 2), (1, 1), ((1, 0), (0, 1)), (1, 0)),
    "depthwise dilated": (4, (2, 3, 1, 4), 4, (1, 1), (2, 1), ((0, 1), (2, 0)), (0, 1)),
    "depthwise unequal strides": (4, (3, 2, 1, 4), 4, (2, 1), (1, 1), ((1, 0), (0, 1)), (1, 0)),
    "depthwise unequal strides dilated": (
        4, (2, 3, 1, 4), 4, (1, 2), (2, 1), ((0, 1), (2, 0)), (0, 1),
    ),
    "depthwise unequal strides as tiles": (
        3, (2, 3, 1, 3), 3, (2, 3), (1, 1), ((1, 0), (0, 2)), (0, 1),
    ),
    "depthwise unequal strides dilated, kernel as strides": (
        3, (2, 3, 1, 3), 3, (2, 3), (2, 1), ((0, 0), (1, 0)), (0, 0),
    ),
    "depthwise multiplier 2": (3, (2, 2, 2, 3), 3, (2, 2), (1, 1), ((0, 0), (1, 1)), (0, 0)),
    "two groups": (4, (3, 2, 3, 4), 2, (1, 2), (1, 1), ((1, 1), (0, 1)), (0, 1)),
    "two groups dilated": (4, (2, 2, 3, 4), 2, (2, 1), (1, 2), ((1, 0), (0, 0)), (0, 0)),
}  # fmt: skip


def _check_transpose(case: tuple, batch: int = 2) -> None:
    channels, shape, groups, strides, dilations, pads, output_padding = case
    x, kernel = _normal(batch, 5, 4, channels), _normal(*shape)
    expected = conv_transpose_reference(
        nchw(x), hw_last(kernel), strides, dilations, pads, output_padding, groups
    )
    got = ops.conv2d_transpose(
        tf.constant(x), tf.constant(kernel), strides, dilations, pads, output_padding, groups
    )
    close(got, nhwc(expected))


@pytest.mark.parametrize(
    "case",
    sorted(TRANSPOSES),
)
def test_conv2d_transpose_spreads_each_pixel_over_the_kernel(case: str):
    _check_transpose(TRANSPOSES[case])


def test_conv2d_transpose_defaults_to_no_output_padding_and_one_group():
    x, kernel = _normal(1, 4, 5, 2), _normal(2, 3, 3, 2)
    pads = ((1, 0), (0, 1))
    got = ops.conv2d_transpose(tf.constant(x), tf.constant(kernel), (2, 1), (1, 1), pads)
    close(got, nhwc(conv_transpose_reference(nchw(x), hw_last(kernel), (2, 1), (1, 1), pads)))


@pytest.mark.parametrize(
    "case",
    [
        "plain",
        "depthwise",
        "depthwise unequal strides",
        "depthwise unequal strides as tiles",
        "two groups",
    ],
)
def test_conv2d_transpose_traces_with_an_unknown_batch(case: str):
    channels, shape, groups, strides, dilations, pads, output_padding = TRANSPOSES[case]
    x, kernel = _normal(3, 5, 4, channels), _normal(*shape)
    run = tf.function(
        lambda v: ops.conv2d_transpose(
            v, tf.constant(kernel), strides, dilations, pads, output_padding, groups
        ),
        input_signature=[tf.TensorSpec([None, 5, 4, channels], tf.float32)],
    )
    expected = conv_transpose_reference(
        nchw(x), hw_last(kernel), strides, dilations, pads, output_padding, groups
    )
    close(run(tf.constant(x)), nhwc(expected))


CONV_OPS = {
    "Conv2D",
    "DepthwiseConv2dNative",
    "Conv2DBackpropInput",
    "DepthwiseConv2dNativeBackpropInput",
}


def _conv_ops(fn: Callable, shape: list[int]) -> list[str]:
    """The convolution ops of ``fn``'s trace for an input of ``shape``, in order."""
    graph = tf.function(fn).get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    return [op.type for op in graph.get_operations() if op.type in CONV_OPS]


@pytest.mark.parametrize(
    "case, expected",
    [
        ("plain", ["Conv2D"]),
        ("depthwise", ["DepthwiseConv2dNative"]),
        ("depthwise multiplier 2", ["DepthwiseConv2dNative"]),
        ("two groups", ["Conv2D"] * 2),
        ("three groups", ["Conv2D"] * 3),
    ],
)
def test_a_depthwise_conv2d_is_one_depthwise_op_and_other_groups_one_conv2d_each(
    case: str, expected: list[str]
):
    channels, shape, groups, strides, dilations, pads = CONVOLUTIONS[case]
    kernel = tf.constant(_normal(*shape))
    found = _conv_ops(
        lambda v: ops.conv2d(v, kernel, strides, dilations, pads, groups), [2, 7, 8, channels]
    )
    assert found == expected


@pytest.mark.parametrize(
    "case, expected",
    [
        ("plain", ["Conv2DBackpropInput"]),
        ("depthwise", ["DepthwiseConv2dNativeBackpropInput"]),
        # unequal strides: a stride-1 depthwise convolution of the spread input, or tiles
        ("depthwise unequal strides", ["DepthwiseConv2dNative"]),
        ("depthwise unequal strides dilated, kernel as strides", ["DepthwiseConv2dNative"]),
        ("depthwise unequal strides as tiles", []),
        ("depthwise multiplier 2", ["Conv2DBackpropInput"] * 3),
        ("two groups", ["Conv2DBackpropInput"] * 2),
    ],
)
def test_a_depthwise_conv2d_transpose_is_one_depthwise_op_and_other_groups_one_each(
    case: str, expected: list[str]
):
    channels, shape, groups, strides, dilations, pads, output_padding = TRANSPOSES[case]
    kernel = tf.constant(_normal(*shape))
    found = _conv_ops(
        lambda v: ops.conv2d_transpose(v, kernel, strides, dilations, pads, output_padding, groups),
        [2, 5, 4, channels],
    )
    assert found == expected


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_conv2d_transpose_is_the_adjoint_of_conv2d(groups: int):
    # <conv2d(x, k), y> = <x, conv2d_transpose(y, k)>: the same HWIO kernel reads as the
    # transpose's HWOI, and output padding (size + pads - span) mod stride restores x's size.
    strides, dilations, pads = (2, 2), (1, 1), ((1, 2), (0, 1))
    x = _normal(2, 9, 10, 4)
    kernel = _normal(3, 2, 4 // groups, 8)
    y = ops.conv2d(tf.constant(x), tf.constant(kernel), strides, dilations, pads, groups)
    y_probe = _normal(*y.shape)
    padding = [
        (size + sum(p) - (k - 1) - 1) % s
        for size, p, k, s in zip((9, 10), pads, (3, 2), strides, strict=True)
    ]
    back = ops.conv2d_transpose(
        tf.constant(y_probe), tf.constant(kernel), strides, dilations, pads, padding, groups
    )
    assert back.shape == x.shape
    lhs = float(np.sum(np.float64(y) * y_probe))
    rhs = float(np.sum(np.float64(back) * x))
    assert lhs == pytest.approx(rhs, rel=1e-4)


# OpenVINO and ONNX weights: (O, I / groups, kh, kw), and (I, O / groups, kh, kw) transposed
NCHW_CASES = {
    "plain": (3, (4, 3, 3, 2), 1, (1, 2), (2, 1), ((1, 2), (0, 1))),
    "depthwise": (4, (4, 1, 2, 3), 4, (2, 2), (1, 1), ((0, 1), (1, 1))),
    "two groups": (4, (6, 2, 2, 2), 2, (1, 1), (1, 2), ((1, 0), (0, 2))),
}


@pytest.mark.parametrize("case", sorted(NCHW_CASES))
def test_conv_nchw_is_the_direct_sum_in_channels_first_layout(case: str):
    channels, shape, groups, strides, dilations, pads = NCHW_CASES[case]
    x, w = _normal(2, channels, 7, 6), _normal(*shape)
    got = ops.conv_nchw(tf.constant(x), tf.constant(w), strides, dilations, pads, groups)
    close(got, conv_reference(x, w, strides, dilations, pads, groups))


def test_conv_nchw_groups_default_to_one():
    x, w = _normal(1, 2, 5, 6), _normal(3, 2, 2, 3)
    got = ops.conv_nchw(tf.constant(x), tf.constant(w), (1, 1), (1, 1), ((0, 1), (1, 0)))
    close(got, conv_reference(x, w, (1, 1), (1, 1), ((0, 1), (1, 0))))


NCHW_TRANSPOSES = {
    "plain": (3, (3, 2, 2, 3), 1, (2, 1), (1, 1), ((1, 0), (0, 1)), (1, 0)),
    "depthwise": (4, (4, 1, 3, 2), 4, (1, 2), (1, 1), ((0, 0), (1, 0)), (0, 1)),
    "two groups": (4, (4, 3, 2, 2), 2, (2, 2), (1, 1), ((0, 1), (1, 1)), (1, 1)),
}


@pytest.mark.parametrize("case", sorted(NCHW_TRANSPOSES))
def test_conv_transpose_nchw_spreads_each_pixel_in_channels_first_layout(case: str):
    channels, shape, groups, strides, dilations, pads, output_padding = NCHW_TRANSPOSES[case]
    x, w = _normal(2, channels, 5, 4), _normal(*shape)
    got = ops.conv_transpose_nchw(
        tf.constant(x), tf.constant(w), strides, dilations, pads, output_padding, groups
    )
    close(got, conv_transpose_reference(x, w, strides, dilations, pads, output_padding, groups))


def test_conv_transpose_nchw_defaults_to_no_output_padding_and_one_group():
    x, w = _normal(1, 2, 4, 3), _normal(2, 3, 3, 2)
    pads = ((0, 1), (1, 1))
    got = ops.conv_transpose_nchw(tf.constant(x), tf.constant(w), (2, 2), (1, 1), pads)
    close(got, conv_transpose_reference(x, w, (2, 2), (1, 1), pads))


# --- the graph --------------------------------------------------------------------------


class Calc(Graph):
    """A graph of a few arithmetic ops, with the base class's names and messages."""

    supported = frozenset({"Placeholder", "Const", "Add", "Mul", "Neg", "Halves", "Scale"})

    def apply(self, node: Node, args: list[tf.Tensor]) -> tf.Tensor | tuple[tf.Tensor, ...]:
        if node.op == "Add":
            return args[0] + args[1]
        if node.op == "Mul":
            return args[0] * args[1]
        if node.op == "Neg":
            return -args[0]
        if node.op == "Scale":
            return args[0] * node.attr["by"]
        assert node.op == "Halves"
        return tuple(tf.split(args[0], 2, axis=-1))

    def check_node(self, node: Node) -> None:
        if node.op == "Scale" and "by" not in node.attr:
            raise FaceReconError(f"{self.source}: node {node.name!r} scales by nothing")


def calc(*specs: tuple, weights: dict | None = None, nodes: type = dict) -> Calc:
    """A Calc graph of ``(name, op, inputs[, attr[, ports]])`` specs."""
    table = nodes()
    for name, op, inputs, *rest in specs:
        attr = rest[0] if rest else {}
        ports = rest[1] if len(rest) > 1 else ()
        table[name] = Node(name, op, tuple(inputs), attr, tuple(ports))
    return Calc(SOURCE, table, {k: np.asarray(v, np.float32) for k, v in (weights or {}).items()})


def message(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_a_node_reads_output_zero_unless_its_ports_say_otherwise():
    assert Node("n", "Add", ("a", "b"), {}).port(1) == 0
    assert Node("n", "Add", ("a", "b"), {}, (2, 1)).port(0) == 2
    assert Node("n", "Add", ("a", "b"), {}, (2, 1)).port(1) == 1


DIAMOND = (
    ("x", "Placeholder", ()),
    ("w", "Const", ()),
    ("p", "Mul", ("x", "w")),
    ("q", "Neg", ("x",)),
    ("y", "Add", ("p", "q")),
    ("z", "Neg", ("q",)),
    ("unused", "Neg", ("x",)),
)
DIAMOND_NAMES = [spec[0] for spec in DIAMOND]


def test_order_puts_inputs_first_visits_each_node_once_and_only_needed_ones():
    graph = calc(*DIAMOND, weights={"w": 2.0})
    # depth first, inputs in the order a node lists them, outputs in the order asked
    assert graph.order(["y"]) == ["x", "w", "p", "q", "y"]
    assert graph.order(["z", "y"]) == ["x", "q", "z", "w", "p", "y"]
    assert graph.order(["y", "z"]) == ["x", "w", "p", "q", "y", "z"]
    assert graph.order(["y", "y"]) == ["x", "w", "p", "q", "y"]
    # a feed stands in for its node: nothing upstream of it is needed
    assert graph.order(["y"], ["q"]) == ["x", "w", "p", "y"]
    assert graph.order(["z"], ["q"]) == ["z"]
    assert graph.order(["q"], ["q"]) == []


def test_order_follows_a_chain_deeper_than_pythons_recursion_limit():
    depth = 5000
    specs = [("n0", "Placeholder", ())] + [
        (f"n{i}", "Neg", (f"n{i - 1}",)) for i in range(1, depth)
    ]
    assert calc(*specs).order([f"n{depth - 1}"]) == [f"n{i}" for i in range(depth)]


def test_order_names_an_unknown_output_or_feed():
    graph = calc(*DIAMOND, weights={"w": 2.0})
    with pytest.raises(FaceReconError) as error:
        graph.order(["y", "ghost"])
    assert message(error) == "probe.json: the graph has no node 'ghost'"
    with pytest.raises(FaceReconError) as error:
        graph.order(["y"], ["phantom"])
    assert message(error) == "probe.json: the graph has no node 'phantom'"


class Lookups(dict):
    """Nodes by name that stop a search with RecursionError once it has looked up far more
    nodes than the graph holds (a search that cycles forever)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __getitem__(self, key: str) -> Node:
        self.count += 1
        if self.count > 10_000:
            raise RecursionError("the search has looked up 10000 nodes in a graph of 3")
        return super().__getitem__(key)


def test_a_cycle_is_one_line_naming_its_nodes():
    graph = calc(
        ("x", "Placeholder", ()), ("a", "Add", ("x", "b")), ("b", "Neg", ("a",)), nodes=Lookups
    )
    with pytest.raises(FaceReconError) as error:
        graph.order(["b"])
    assert "cycle" in message(error) and "'a'" in message(error)


def test_check_names_the_first_unsupported_op_and_what_is_supported():
    graph = calc(("x", "Placeholder", ()), ("s", "Softmax", ("x",)), ("t", "TopK", ("s",)))
    with pytest.raises(FaceReconError) as error:
        graph.check(graph.order(["t"]))
    assert message(error) == (
        "probe.json: node 's' uses op 'Softmax', which facerecon's graph reader does not "
        "support (supported: Add, Const, Halves, Mul, Neg, Placeholder, Scale)"
    )


def test_check_asks_the_reader_about_each_nodes_attributes():
    graph = calc(("x", "Placeholder", ()), ("s", "Scale", ("x",), {}))
    with pytest.raises(FaceReconError) as error:
        graph.check(["x", "s"])
    assert message(error) == "probe.json: node 's' scales by nothing"
    calc(("x", "Placeholder", ()), ("s", "Scale", ("x",), {"by": 2.0})).check(["x", "s"])


def test_check_names_an_input_that_is_not_in_the_graph():
    graph = calc(("x", "Placeholder", ()), ("y", "Add", ("x", "ghost")))
    with pytest.raises(FaceReconError) as error:
        graph.check(["x", "y"])
    assert message(error) == "probe.json: node 'y' reads 'ghost', which is not in the graph"


def test_check_names_a_constant_without_weights():
    graph = calc(("x", "Placeholder", ()), ("w", "Const", ()), ("y", "Add", ("x", "w")))
    with pytest.raises(FaceReconError) as error:
        graph.check(["x", "w", "y"])
    assert message(error) == "probe.json: constant 'w' has no entry in the weights manifest"
    # the check passes on what is fine
    calc(*DIAMOND, weights={"w": 2.0}).check(DIAMOND_NAMES)


def test_run_computes_the_outputs_from_the_feeds():
    graph = calc(*DIAMOND, weights={"w": [2.0, -3.0]})
    x = _normal(4, 2)
    y, z = graph.run({"x": tf.constant(x)}, ["y", "z"])
    np.testing.assert_allclose(y, x * [2.0, -3.0] - x, rtol=1e-6)
    np.testing.assert_allclose(z, x, rtol=1e-6)
    # a fed node stands in for what computes it; unfed inputs upstream are not needed
    q = _normal(4, 2)
    (y,) = graph.run({"q": tf.constant(q), "p": tf.constant(x)}, ["y"])
    np.testing.assert_allclose(y, x + q, rtol=1e-6)


def test_run_reads_the_ports_of_a_node_with_several_outputs():
    graph = calc(
        ("x", "Placeholder", ()),
        ("h", "Halves", ("x",)),
        ("first", "Neg", ("h",)),
        ("second", "Neg", ("h",), {}, (1,)),
        ("swap", "Add", ("h", "h"), {}, (1, 0)),
        ("twice", "Add", ("h", "h"), {}, (1, 1)),
    )
    x = _normal(3, 4)
    first, second, swap, twice, h = graph.run(
        {"x": tf.constant(x)}, ["first", "second", "swap", "twice", "h"]
    )
    np.testing.assert_allclose(first, -x[:, :2])
    np.testing.assert_allclose(second, -x[:, 2:])
    np.testing.assert_allclose(swap, x[:, 2:] + x[:, :2])
    np.testing.assert_allclose(twice, 2 * x[:, 2:])
    np.testing.assert_allclose(h, x[:, :2])  # a node's own value is its first output


def test_run_names_the_input_it_needs_and_was_not_fed():
    graph = calc(*DIAMOND, weights={"w": 2.0})
    with pytest.raises(FaceReconError) as error:
        graph.run({"p": tf.zeros([2])}, ["y", "z"])
    assert message(error) == "probe.json: computing y, z needs input 'x', which is not fed"


def test_constants_are_made_once_eagerly_even_when_first_needed_in_a_trace():
    graph = calc(
        ("x", "Placeholder", ()),
        ("w", "Const", ()),
        ("y", "Mul", ("x", "w")),
        weights={"w": [1.5, -2.0]},
    )
    traced = tf.function(lambda v: graph.run({"x": v}, ["y"])[0])
    x = _normal(3, 2)
    np.testing.assert_allclose(traced(tf.constant(x)), x * [1.5, -2.0], rtol=1e-6)
    w = graph.constant("w")
    np.testing.assert_array_equal(w.numpy(), [1.5, -2.0])  # eager: it has a value
    assert graph.constant("w") is w
    (y,) = graph.run({"x": tf.constant(x)}, ["y"])  # an eager run reuses it
    np.testing.assert_allclose(y, x * [1.5, -2.0], rtol=1e-6)
    assert graph.constant("w") is w


def test_gradients_reach_the_fed_input():
    graph = calc(
        ("x", "Placeholder", ()),
        ("w", "Const", ()),
        ("p", "Mul", ("x", "x")),
        ("y", "Mul", ("p", "w")),
        weights={"w": [3.0]},
    )
    x = tf.Variable(_normal(5))
    with tf.GradientTape() as tape:
        (y,) = graph.run({"x": x}, ["y"])
        total = tf.reduce_sum(y)
    np.testing.assert_allclose(tape.gradient(total, x), 6 * x.numpy(), rtol=1e-6)


def test_split_feed_gives_each_reader_its_own_input():
    graph = calc(
        ("x", "Placeholder", ()),
        ("w", "Const", ()),
        ("s", "Neg", ("x",)),
        ("r0", "Add", ("s", "w")),
        ("r1", "Mul", ("s", "s")),
        ("r2", "Neg", ("s",)),
        weights={"w": 10.0},
    )
    feeds = graph.split_feed("s", ["r1", "r0"])
    assert feeds == ["s/0", "s/1"]
    assert graph.nodes["s/0"] == Node("s/0", "Placeholder", (), {})
    assert graph.nodes["r1"].inputs == ("s/0", "s/0")
    assert graph.nodes["r0"].inputs == ("s/1", "w")
    assert graph.nodes["r2"].inputs == ("s",)  # not a reader given
    a, b, x = _normal(3), _normal(3), _normal(3)
    r0, r1, r2 = graph.run(
        {"s/0": tf.constant(a), "s/1": tf.constant(b), "x": tf.constant(x)}, ["r0", "r1", "r2"]
    )
    np.testing.assert_allclose(r0, b + 10.0)
    np.testing.assert_allclose(r1, a * a)
    np.testing.assert_allclose(r2, x)
    with pytest.raises(FaceReconError) as error:
        graph.run({"x": tf.constant(x)}, ["r0"])
    assert "needs input 's/1'" in message(error)


def test_split_feed_refuses_a_node_that_does_not_read_the_split_one():
    graph = calc(("x", "Placeholder", ()), ("s", "Neg", ("x",)), ("r", "Neg", ("x",)))
    with pytest.raises(FaceReconError) as error:
        graph.split_feed("s", ["r"])
    assert message(error) == "probe.json: node 'r' does not read 's'"


TWO_INPUTS = (
    ("x1", "Placeholder", ()),
    ("x2", "Placeholder", ()),
    ("a", "Neg", ("x1",)),
    ("b", "Add", ("a", "x2")),
    ("c", "Neg", ("b",)),
    ("s", "Softmax", ("a",)),
)


def test_check_stretch_accepts_what_the_feed_alone_computes():
    graph = calc(*TWO_INPUTS)
    graph.check_stretch("x1", "a")
    graph.check_stretch("b", "c")


def test_check_stretch_names_another_input_the_output_needs():
    graph = calc(*TWO_INPUTS)
    with pytest.raises(FaceReconError) as error:
        graph.check_stretch("x1", "c")
    assert message(error) == "probe.json: 'c' depends on input 'x2', not only on 'x1'"


def test_check_stretch_checks_the_ops_on_the_way():
    graph = calc(*TWO_INPUTS)
    with pytest.raises(FaceReconError) as error:
        graph.check_stretch("x1", "s")
    assert "uses op 'Softmax'" in message(error)


# --- fold_static ------------------------------------------------------------------------


def _recording(seen: list):
    def op(node: Node, args: list[tf.Tensor]) -> tf.Tensor:
        seen.append(tf.executing_eagerly())
        return args[0] * node.attr["k"] + args[1]

    return op


NODE = Node("f", "Op", ("a", "b"), {"k": 3.0})


def test_fold_static_runs_eager_calls_as_they_are_so_the_tape_sees_them():
    seen: list = []
    a, b = tf.Variable([1.0, 2.0]), tf.constant([0.5, 0.5])
    with tf.GradientTape() as tape:
        out = fold_static(_recording(seen), NODE, [a, b])
    np.testing.assert_allclose(out, [3.5, 6.5])
    np.testing.assert_allclose(tape.gradient(out, a), [3.0, 3.0])
    assert seen == [True]


def test_fold_static_computes_static_inputs_once_eagerly_inside_a_trace():
    seen: list = []

    @tf.function
    def traced() -> tf.Tensor:
        shape = tf.cast(tf.shape(tf.zeros([2, 5])), tf.float32)  # static in the trace
        return fold_static(_recording(seen), NODE, [shape, tf.constant([1.0, -1.0])])

    np.testing.assert_allclose(traced(), [7.0, 14.0])
    assert seen == [True]


def test_fold_static_leaves_a_traced_value_to_the_trace():
    seen: list = []

    @tf.function(input_signature=[tf.TensorSpec([2], tf.float32)])
    def traced(x: tf.Tensor) -> tf.Tensor:
        return fold_static(_recording(seen), NODE, [tf.constant([1.0, 2.0]), x])

    np.testing.assert_allclose(traced(tf.constant([10.0, 20.0])), [13.0, 26.0])
    np.testing.assert_allclose(traced(tf.constant([0.0, 1.0])), [3.0, 7.0])
    assert seen == [False]


# --- Keras ------------------------------------------------------------------------------

LINE = (
    ("x", "Placeholder", ()),
    ("c", "Const", ()),
    ("double", "Scale", ("x",), {"by": 2.0}),
    ("shift", "Add", ("double", "c")),
    ("out", "Neg", ("shift",)),
    ("skip", "Add", ("shift", "x")),
)


def test_chain_makes_each_stop_a_named_layer_of_its_stretch():
    graph = calc(*LINE, weights={"c": [1.0, -1.0, 0.5]})
    image = keras.Input((3,))
    out = chain(
        graph, image, "x", [("doubled", "double"), ("shifted", "shift"), ("negated", "out")]
    )
    model = keras.Model(image, out)
    assert [layer.name for layer in model.layers[1:]] == ["doubled", "shifted", "negated"]
    assert all(isinstance(layer, GraphLayer) for layer in model.layers[1:])
    assert not model.trainable_weights
    x = _normal(4, 3)
    np.testing.assert_allclose(model(x), -(2 * x + [1.0, -1.0, 0.5]), rtol=1e-6)
    shifted = keras.Model(image, model.get_layer("shifted").output)
    np.testing.assert_allclose(shifted(x), 2 * x + [1.0, -1.0, 0.5], rtol=1e-6)
    assert model.get_layer("shifted").feed == "double"


def test_a_layer_runs_its_stretch_from_its_feed():
    graph = calc(*LINE, weights={"c": [1.0, -1.0, 0.5]})
    layer = GraphLayer(graph, "double", "out")
    d = _normal(2, 3)
    np.testing.assert_allclose(layer(tf.constant(d)), -(d + [1.0, -1.0, 0.5]), rtol=1e-6)


def test_a_chain_across_a_skip_connection_fails_to_build():
    graph = calc(*LINE, weights={"c": [1.0, -1.0, 0.5]})
    image = keras.Input((3,))
    with pytest.raises(FaceReconError) as error:
        chain(graph, image, "x", [("shifted", "shift"), ("skipped", "skip")])
    assert message(error) == "probe.json: 'skip' depends on input 'x', not only on 'shift'"
