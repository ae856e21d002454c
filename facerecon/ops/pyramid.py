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


def _mirror(n: int, pad: int = 2) -> np.ndarray:
    """Indices of 0..n-1 extended by ``pad`` on each side by reflection about the edge
    samples (``dcb|abcd|cba``), folded again for sizes smaller than the pad."""
    idx = np.arange(-pad, n + pad)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


def _reflect(images: tf.Tensor, sparse: bool = False) -> tf.Tensor:
    """Pad rows and columns by 2 with mirrored samples.

    Zero padding would make a flat image's border a band edge: a flat image must have no
    band energy at all, so the borders are mirrored (Burt & Adelson's reflection).
    """
    for axis in (1, 2):
        n = images.shape[axis]
        if sparse and n == 1:
            # One sample between inserted zeros: its mirror images sit at even offsets.
            zero = tf.zeros_like(images)
            images = tf.concat([images, zero, images, zero, images], axis=axis)
        else:
            images = tf.gather(images, _mirror(n), axis=axis)
    return images


def reduce(images: tf.Tensor) -> tf.Tensor:
    """Blur with the 5x5 binomial kernel (mirrored borders) and keep the even rows and
    columns: size n becomes ceil(n / 2)."""
    c = images.shape[-1]
    return tf.nn.depthwise_conv2d(_reflect(images), _kernel(c), [1, 2, 2, 1], "VALID")


def expand(images: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Upsample ``images`` to the size of ``like``: the samples go to the even rows and
    columns, zeros between, then the kernel x 4 (mirrored borders) fills them in."""
    c = images.shape[-1]
    h, w = like.shape[1], like.shape[2]
    lo_h, lo_w = images.shape[1], images.shape[2]
    # Zero insertion as a stride-2 transpose of a 1x1 identity, cropped to the target size.
    eye = tf.constant(np.eye(c, dtype=np.float32)[None, None])
    batch = tf.shape(images)[0]
    sparse = tf.nn.conv2d_transpose(images, eye, [batch, 2 * lo_h, 2 * lo_w, c], 2, "VALID")
    sparse = sparse[:, :h, :w, :]
    return tf.nn.depthwise_conv2d(_reflect(sparse, True), _kernel(c, 4.0), [1, 1, 1, 1], "VALID")


def split(images: tf.Tensor, levels: int) -> list[tf.Tensor]:
    """Bands L_0 (finest) .. L_{levels-1}, then the low-pass residual g_levels, as a list.

    The paper's indexing (Appendix C): g_0 is the image, g_{k+1} = reduce(g_k) and
    L_k = g_k - expand(g_{k+1}).
    """
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
