"""``blur``: a random amount of Gaussian blur."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from pydantic import Field

from facerecon import Params, Transform, hookimpl
from facerecon.ops.warp import uniform


class Blur(Transform):
    """Blends each image with its Gaussian blur (std ``sigma`` pixels) by a weight drawn
    uniformly from [0, 1]: from sharp to fully blurred."""

    name = "blur"

    class Params(Params):
        sigma: float = Field(1.0, gt=0, le=10, allow_inf_nan=False, description="blur std, px")

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        sigma = self.params.sigma
        radius = int(np.ceil(3 * sigma))
        x = np.arange(-radius, radius + 1, dtype=np.float32)
        taps = np.exp(-0.5 * (x / sigma) ** 2)
        taps /= taps.sum()
        channels = images.shape[-1]
        rows = tf.constant(np.tile(taps[:, None, None, None], (1, 1, channels, 1)))
        cols = tf.constant(np.tile(taps[None, :, None, None], (1, 1, channels, 1)))
        pad = [[0, 0], [radius, radius], [radius, radius], [0, 0]]
        padded = tf.pad(images, pad, mode="REFLECT")
        blurred = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
        blurred = tf.nn.depthwise_conv2d(blurred, cols, [1, 1, 1, 1], "VALID")
        amount = uniform(seed, images, 0.0, 1.0)[:, None, None, None]
        return images + amount * (blurred - images)


@hookimpl
def register_transforms(register):
    register(Blur)
