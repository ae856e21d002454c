"""``noise``: additive Gaussian pixel noise."""

from __future__ import annotations

import tensorflow as tf
from pydantic import Field

from facerecon import Params, Transform, hookimpl


class Noise(Transform):
    """Adds independent Gaussian noise of std ``std`` to every pixel and channel."""

    name = "noise"

    class Params(Params):
        std: float = Field(0.02, ge=0, le=1, description="noise std, in [0, 1] pixel units")

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return images + self.params.std * tf.random.stateless_normal(tf.shape(images), seed)


@hookimpl
def register_transforms(register):
    register(Noise)
