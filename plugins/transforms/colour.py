"""``colour``: random brightness, contrast and saturation changes."""

from __future__ import annotations

import tensorflow as tf
from pydantic import Field

from facerecon import Params, Transform, hookimpl
from facerecon.ops.warp import uniform


class Colour(Transform):
    """Adds a brightness offset in [-brightness, brightness], then scales contrast (about
    the image's mean) and saturation (about each pixel's gray) by factors in [1 - x, 1 + x].
    Values are clipped back to [0, 1]."""

    name = "colour"

    class Params(Params):
        brightness: float = Field(0.1, ge=0, le=1, description="largest brightness offset")
        contrast: float = Field(0.1, ge=0, le=1, description="largest relative contrast change")
        saturation: float = Field(0.1, ge=0, le=1, description="largest relative change")

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        p = self.params
        s_b, s_c, s_s = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        brightness = uniform(s_b, images, -p.brightness, p.brightness)[:, None, None, None]
        contrast = uniform(s_c, images, 1 - p.contrast, 1 + p.contrast)[:, None, None, None]
        saturation = uniform(s_s, images, 1 - p.saturation, 1 + p.saturation)[:, None, None, None]
        out = images + brightness
        mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
        out = mean + contrast * (out - mean)
        gray = tf.reduce_mean(out, axis=3, keepdims=True)
        out = gray + saturation * (out - gray)
        return tf.clip_by_value(out, 0.0, 1.0)


@hookimpl
def register_transforms(register):
    register(Colour)
