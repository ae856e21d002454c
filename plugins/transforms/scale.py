"""``scale``: a random zoom of every image about its centre."""

from __future__ import annotations

import tensorflow as tf
from pydantic import Field, model_validator

from facerecon import Params, Transform, hookimpl
from facerecon.ops.warp import affine, uniform


class Scale(Transform):
    """Zooms each image by a factor drawn uniformly from [min, max]."""

    name = "scale"

    class Params(Params):
        min: float = Field(0.9, gt=0.2, le=5, allow_inf_nan=False, description="smallest factor")
        max: float = Field(1.1, gt=0.2, le=5, allow_inf_nan=False, description="largest factor")

        @model_validator(mode="after")
        def _ordered(self):
            if self.min > self.max:
                raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
            return self

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return affine(images, scale=uniform(seed, images, self.params.min, self.params.max))


@hookimpl
def register_transforms(register):
    register(Scale)
