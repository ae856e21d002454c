"""``pixels``: the image's pixels are the parameters (the paper's setting)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from facerecon import Parameterization, hookimpl


class Pixels(Parameterization):
    """Optimizes the pixel values directly, clipping them to [0, 1] after every update."""

    name = "pixels"
    pixel_space = True

    def from_images(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(images, np.float32)

    def to_images(self, params: tf.Tensor) -> tf.Tensor:
        return tf.convert_to_tensor(params)

    def constrain(self, params: tf.Variable) -> None:
        params.assign(tf.clip_by_value(params, 0.0, 1.0))


@hookimpl
def register_parameterizations(register):
    register(Pixels)
