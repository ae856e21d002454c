"""``mirror``: horizontal mirror symmetry, R = ||p - F_x p||^2 (paper, Appendix C)."""

from __future__ import annotations

import tensorflow as tf

from facerecon import Regularizer, hookimpl


class Mirror(Regularizer):
    """Favours faces that are symmetric about the vertical axis."""

    name = "mirror"

    def __call__(self, images: tf.Tensor, taps: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.reduce_sum(tf.square(images - images[:, :, ::-1, :]), axis=[1, 2, 3])


@hookimpl
def register_regularizers(register):
    register(Mirror)
