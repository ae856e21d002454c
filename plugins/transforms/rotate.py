"""``rotate``: a random rotation of every image about its centre."""

from __future__ import annotations

import tensorflow as tf
from pydantic import Field

from facerecon import Params, Transform, hookimpl
from facerecon.ops.warp import affine, uniform


class Rotate(Transform):
    """Rotates each image by an angle drawn uniformly from [-degrees, degrees]."""

    name = "rotate"

    class Params(Params):
        degrees: float = Field(5.0, ge=0, le=180, allow_inf_nan=False, description="largest angle")

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        angle = uniform(seed, images, -self.params.degrees, self.params.degrees)
        return affine(images, degrees=angle)


@hookimpl
def register_transforms(register):
    register(Rotate)
