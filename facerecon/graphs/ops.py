"""TensorFlow ops the graph readers share: convolutions (plain, depthwise, grouped and
transposed) with explicit padding, and PReLU.

Images are NHWC here, as TensorFlow's CPU kernels want them; a reader of a channels-first
format moves its tensors with :func:`to_channels_last` and :func:`to_channels_first` around
these calls (adjacent pairs of transposes cancel in the compiled graph).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

Pads = Sequence[tuple[int, int]]  # (begin, end) per spatial axis


def to_channels_last(x: tf.Tensor) -> tf.Tensor:
    """NCHW -> NHWC."""
    return tf.transpose(x, [0, 2, 3, 1])


def to_channels_first(x: tf.Tensor) -> tf.Tensor:
    """NHWC -> NCHW."""
    return tf.transpose(x, [0, 3, 1, 2])


def prelu(x: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """x where x >= 0, alpha * x below (alpha broadcast against x)."""
    return tf.nn.relu(x) - alpha * tf.nn.relu(-x)


def _explicit(pads: Pads) -> list[int]:
    """Conv2D's explicit_paddings (NHWC order) from (begin, end) per spatial axis."""
    (top, bottom), (left, right) = pads
    return [0, 0, top, bottom, left, right, 0, 0]


def conv2d(
    x: tf.Tensor,
    kernel: tf.Tensor,
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Pads | str,
    groups: int = 1,
) -> tf.Tensor:
    """Cross-correlation of NHWC ``x`` with an HWIO ``kernel`` (I = in-channels / groups),
    zero padding ``pads`` ("SAME", "VALID" or (begin, end) per spatial axis). Depthwise when
    every group has one input and one output channel per multiplier; other groups are
    convolved one by one."""
    stride = [1, *strides, 1]
    dilation = [1, *dilations, 1]
    channels = x.shape[-1]
    if groups == 1:
        return tf.raw_ops.Conv2D(
            input=x, filter=kernel, strides=stride, dilations=dilation, **_padding(pads)
        )
    if kernel.shape[2] == 1 and groups == channels:
        # (kh, kw, 1, C * m) -> DepthwiseConv2dNative's (kh, kw, C, m): output c * m + j
        depthwise = tf.reshape(kernel, [kernel.shape[0], kernel.shape[1], channels, -1])
        return depthwise_conv2d(x, depthwise, strides, dilations, pads)
    parts = zip(tf.split(x, groups, axis=-1), tf.split(kernel, groups, axis=-1), strict=True)
    return tf.concat([conv2d(a, k, strides, dilations, pads) for a, k in parts], axis=-1)


def _padding(pads: Pads | str) -> dict:
    """The padding attributes of TensorFlow's convolution ops: "SAME", "VALID" or explicit
    (begin, end) pairs."""
    if isinstance(pads, str):
        return {"padding": pads}
    return {"padding": "EXPLICIT", "explicit_paddings": _explicit(pads)}


def depthwise_conv2d(
    x: tf.Tensor,
    kernel: tf.Tensor,
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Pads | str,
) -> tf.Tensor:
    """DepthwiseConv2dNative of NHWC ``x`` with a (kh, kw, C, m) ``kernel`` at any strides
    and dilations. TensorFlow's CPU kernel without oneDNN (its default on CPUs without
    AVX-512) takes neither a dilation nor unequal strides: the dilation goes into the kernel
    as zeros, and unequal strides become a stride-1 convolution sampled at the strides."""
    (sh, sw), (dh, dw) = strides, dilations
    if sh == sw and (dh, dw) == (1, 1):
        return tf.raw_ops.DepthwiseConv2dNative(
            input=x, filter=kernel, strides=[1, sh, sw, 1], **_padding(pads)
        )
    if isinstance(pads, str):
        sizes, taps = x.shape[1:3], kernel.shape[:2]
        pads = same_pads(sizes, strides, dilations, taps, True) if pads == "SAME" else [(0, 0)] * 2
    x = tf.pad(x, [[0, 0], *pads, [0, 0]])
    step = sh if sh == sw else 1
    out = tf.raw_ops.DepthwiseConv2dNative(
        input=x, filter=dilate_kernel(kernel, dilations), strides=[1, step, step, 1],
        padding="VALID",
    )  # fmt: skip
    return out if sh == sw else out[:, ::sh, ::sw]


def dilate_kernel(kernel: tf.Tensor, dilations: Sequence[int]) -> tf.Tensor:
    """``kernel`` (spatial axes first) with ``d - 1`` zeros between its taps along each
    spatial axis: the same convolution at dilation 1."""
    dh, dw = dilations
    if (dh, dw) == (1, 1):
        return kernel
    kh, kw, *rest = kernel.shape
    spread = tf.pad(
        kernel[:, None, :, None], [[0, 0], [0, dh - 1], [0, 0], [0, dw - 1]] + [[0, 0]] * len(rest)
    )
    spread = tf.reshape(spread, [kh * dh, kw * dw, *rest])
    return spread[: (kh - 1) * dh + 1, : (kw - 1) * dw + 1]


def conv2d_transpose(
    x: tf.Tensor,
    kernel: tf.Tensor,
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Pads,
    output_padding: Sequence[int] = (0, 0),
    groups: int = 1,
) -> tf.Tensor:
    """The transpose (gradient) of :func:`conv2d` for NHWC ``x`` and an HWOI ``kernel``
    (O = out-channels / groups, I = in-channels, group g reading the g-th slice): each
    input pixel spreads ``kernel`` over the output at ``strides``; the full result is
    cropped by ``pads`` and grown by ``output_padding``."""
    batch, height, width, channels = x.shape
    kh, kw = kernel.shape[0], kernel.shape[1]
    full = [
        (size - 1) * s + d * (k - 1) + 1
        for size, s, d, k in zip((height, width), strides, dilations, (kh, kw), strict=True)
    ]
    stride = [1, *strides, 1]
    dilation = [1, *dilations, 1]
    batch = tf.shape(x)[0] if batch is None else batch
    if (
        groups == channels
        and kernel.shape[2] == 1
        and (strides[0] != strides[1] or tuple(dilations) != (1, 1))
    ):
        out = _depthwise_transpose(x, kernel, strides, dilations)
    elif groups == channels and kernel.shape[2] == 1:
        out = tf.nn.depthwise_conv2d_backprop_input(
            [batch, *full, channels], tf.reshape(kernel, [kh, kw, channels, 1]), x,
            stride, "VALID", dilations=dilation,
        )  # fmt: skip
    elif groups == 1:  # the dilation in the kernel: Conv2DBackpropInput without oneDNN has none
        out = tf.nn.conv2d_transpose(
            x, dilate_kernel(kernel, dilations), [batch, *full, kernel.shape[2]], stride, "VALID"
        )
    else:
        parts = zip(tf.split(x, groups, axis=-1), tf.split(kernel, groups, axis=-1), strict=True)
        out = tf.concat(
            [conv2d_transpose(a, k, strides, dilations, ((0, 0), (0, 0))) for a, k in parts],
            axis=-1,
        )
    # Crop the begin pads; the end pads less output_padding (zeros added where negative).
    (top, bottom), (left, right) = pads
    bottom, right = bottom - output_padding[0], right - output_padding[1]
    out = tf.pad(out, [[0, 0], [0, max(-bottom, 0)], [0, max(-right, 0)], [0, 0]])
    return out[:, top : full[0] - bottom, left : full[1] - right, :]


def _depthwise_transpose(
    x: tf.Tensor, kernel: tf.Tensor, strides: Sequence[int], dilations: Sequence[int]
) -> tf.Tensor:
    """A depthwise transposed convolution (no pads) as a stride-1 depthwise convolution of
    ``x`` with zeros inserted between its pixels, by the spatially flipped kernel: TF's own
    depthwise gradient op refuses unequal strides along the two axes."""
    batch, height, width, channels = x.shape
    batch = tf.shape(x)[0] if batch is None else batch
    (sh, sw), (dh, dw) = strides, dilations
    kh, kw = kernel.shape[0], kernel.shape[1]
    if (kh, kw) == (sh, sw) and (dh, dw) == (1, 1):  # tiles that do not overlap: 3x faster
        tiles = x[:, :, None, :, None, :] * tf.reshape(kernel, [1, 1, kh, 1, kw, channels])
        return tf.reshape(tiles, [batch, height * kh, width * kw, channels])
    spread = tf.pad(
        x[:, :, None, :, None, :], [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]]
    )
    spread = tf.reshape(spread, [batch, height * sh, width * sw, channels])
    spread = spread[:, : (height - 1) * sh + 1, : (width - 1) * sw + 1]
    ph, pw = dh * (kh - 1), dw * (kw - 1)
    spread = tf.pad(spread, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
    flipped = tf.reshape(kernel[::-1, ::-1], [kh, kw, channels, 1])
    return tf.nn.depthwise_conv2d(spread, flipped, [1, 1, 1, 1], "VALID", dilations=[dh, dw])


def same_pads(
    sizes: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
    kernel: Sequence[int], upper: bool,
) -> list[tuple[int, int]]:  # fmt: skip
    """The pads that keep ceil(size / stride) outputs per axis; an odd total puts the extra
    pixel at the end (``upper``) or at the beginning."""
    pads = []
    for size, s, d, k in zip(sizes, strides, dilations, kernel, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        pads.append((small, large) if upper else (large, small))
    return pads


def conv_nchw(
    x: tf.Tensor, weights: tf.Tensor, strides: Sequence[int], dilations: Sequence[int],
    pads: Pads, groups: int = 1,
) -> tf.Tensor:  # fmt: skip
    """:func:`conv2d` of a channels-first ``x`` with (O, I / groups, kh, kw) weights (the
    layout of ONNX and OpenVINO); channels-first out."""
    kernel = tf.transpose(weights, [2, 3, 1, 0])
    out = conv2d(to_channels_last(x), kernel, strides, dilations, pads, groups)
    return to_channels_first(out)


def conv_transpose_nchw(
    x: tf.Tensor, weights: tf.Tensor, strides: Sequence[int], dilations: Sequence[int],
    pads: Pads, output_padding: Sequence[int] = (0, 0), groups: int = 1,
) -> tf.Tensor:  # fmt: skip
    """:func:`conv2d_transpose` of a channels-first ``x`` with (I, O / groups, kh, kw)
    weights (the layout of ONNX and OpenVINO); channels-first out."""
    kernel = tf.transpose(weights, [2, 3, 1, 0])
    out = conv2d_transpose(
        to_channels_last(x), kernel, strides, dilations, pads, output_padding, groups
    )
    return to_channels_first(out)
