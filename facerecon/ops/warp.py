"""Per-image random draws and differentiable affine warps, for transform plugins."""

from __future__ import annotations

import math

import tensorflow as tf


def uniform(seed: tf.Tensor, images: tf.Tensor, low: float, high: float) -> tf.Tensor:
    """One value per image, uniform in [low, high), from a stateless seed."""
    n = tf.shape(images)[:1]
    return tf.random.stateless_uniform(n, seed, minval=low, maxval=high)


def affine(
    images: tf.Tensor,
    scale: tf.Tensor | float = 1.0,
    degrees: tf.Tensor | float = 0.0,
    shift_x: tf.Tensor | float = 0.0,
    shift_y: tf.Tensor | float = 0.0,
) -> tf.Tensor:
    """Scale and rotate every image about its centre, then shift it (pixels), bilinearly.

    Arguments are scalars or one value per image. Borders are filled by reflection, so no
    black frame appears for the model to read. Differentiable in the images.
    """
    n = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    ones = tf.ones([n], tf.float32)
    s, theta = scale * ones, degrees * ones * (math.pi / 180.0)
    dx, dy = shift_x * ones, shift_y * ones
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # The op maps each OUTPUT pixel to the INPUT point it samples: the inverse map,
    # input = c + R(-theta) (output - c - shift) / s.
    cos, sin = tf.cos(theta) / s, tf.sin(theta) / s
    ox, oy = -cx - dx, -cy - dy
    matrices = tf.stack(
        [
            cos,
            sin,
            cos * ox + sin * oy + cx,
            -sin,
            cos,
            -sin * ox + cos * oy + cy,
            tf.zeros([n]),
            tf.zeros([n]),
        ],
        axis=1,
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=matrices,
        output_shape=[height, width],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
