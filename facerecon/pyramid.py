"""Laplacian pyramids of NHWC image batches (Burt & Adelson), in TensorFlow.

Used by the ``laplacian`` regularizer (paper, Appendix C, Eq. 12) and by the solvers'
per-band gradient normalization (the deepdream technique the paper borrows).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_K1 = np.array([1.0, 4.0, 6.0, 4.0, 1.0], dtype=np.float32) / 16.0
_KERNEL = np.outer(_K1, _K1)[:, :, None, None]  # 5x5 binomial, per channel


def _kernel(channels: int, scale: float = 1.0) -> tf.Tensor:
    return tf.constant(np.tile(_KERNEL * scale, (1, 1, channels, 1)))


def reduce(images: tf.Tensor) -> tf.Tensor:
    """Blur with the 5x5 binomial kernel and keep every second row and column."""
    c = images.shape[-1]
    return tf.nn.depthwise_conv2d(images, _kernel(c), [1, 2, 2, 1], "SAME")


def expand(images: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Upsample ``images`` to the size of ``like`` (zero insertion, then the kernel x 4)."""
    c = images.shape[-1]
    out_shape = tf.shape(like)
    # conv2d_transpose with a per-channel diagonal kernel upsamples each channel alone.
    k = np.zeros((5, 5, c, c), np.float32)
    for i in range(c):
        k[:, :, i, i] = _KERNEL[:, :, 0, 0] * 4.0
    return tf.nn.conv2d_transpose(images, tf.constant(k), out_shape, [1, 2, 2, 1], "SAME")


def split(images: tf.Tensor, levels: int) -> list[tf.Tensor]:
    """Bands L_0 (finest) .. L_{levels-1}, then the low-pass residual, as a list."""
    bands = []
    g = images
    for _ in range(levels):
        low = reduce(g)
        bands.append(g - expand(low, g))
        g = low
    bands.append(g)
    return bands


def merge(bands: list[tf.Tensor]) -> tf.Tensor:
    """Inverse of :func:`split`."""
    g = bands[-1]
    for band in reversed(bands[:-1]):
        g = band + expand(g, band)
    return g


def normalize(grad: tf.Tensor, levels: int, eps: float = 1e-8) -> tf.Tensor:
    """Scale every band of each image to unit RMS, then merge: equalizes the spectrum."""
    bands = split(grad, levels)
    scaled = [
        b / (tf.sqrt(tf.reduce_mean(tf.square(b), axis=[1, 2, 3], keepdims=True)) + eps)
        for b in bands
    ]
    return merge(scaled)
