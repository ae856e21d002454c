"""``jitter``: a random shift of every image (reflected at the borders)."""

from __future__ import annotations

import tensorflow as tf
from pydantic import Field

from facerecon import Params, Transform, hookimpl
from facerecon.ops.warp import affine, uniform


class Jitter(Transform):
    """Shifts each image by up to ``pixels`` in x and in y, drawn uniformly."""

    name = "jitter"

    class Params(Params):
        pixels: float = Field(8.0, ge=0, le=64, allow_inf_nan=False, description="largest shift")

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        px = self.params.pixels
        seeds = tf.random.experimental.stateless_split(seed, 2)
        dx, dy = (uniform(s, images, -px, px) for s in tf.unstack(seeds))
        return affine(images, shift_x=dx, shift_y=dy)


@hookimpl
def register_transforms(register):
    register(Jitter)
