"""``mirror``: a random left-right flip of every image."""

from __future__ import annotations

import tensorflow as tf
from pydantic import Field

from facerecon import Params, Transform, hookimpl
from facerecon.ops.warp import uniform


class Mirror(Transform):
    """Flips each image left-right with probability ``p``."""

    name = "mirror"

    class Params(Params):
        p: float = Field(0.5, ge=0, le=1, description="probability of a flip")

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        flip = uniform(seed, images, 0.0, 1.0) < self.params.p
        return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


@hookimpl
def register_transforms(register):
    register(Mirror)
