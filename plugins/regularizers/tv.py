"""``tv``: total variation, Eq. 2 of the paper, R = (||p - S_x p||^2 + ||p - S_y p||^2)^(alpha/2).

The power applies to the whole image's sum, as written in Eq. 2 (and as Eq. 3's
R^(1-2/alpha) factor implies); differences are taken where both pixels exist.
"""

from __future__ import annotations

import tensorflow as tf
from pydantic import Field

from facerecon import Params, Regularizer, hookimpl


class TotalVariation(Regularizer):
    """Penalizes high-frequency noise and sharp edges."""

    name = "tv"

    class Params(Params):
        alpha: float = Field(2.0, gt=0, description="exponent of Eq. 2")

    def __call__(self, images: tf.Tensor, taps: dict[str, tf.Tensor]) -> tf.Tensor:
        dx = images[:, :, 1:, :] - images[:, :, :-1, :]
        dy = images[:, 1:, :, :] - images[:, :-1, :, :]
        total = tf.reduce_sum(tf.square(dx), [1, 2, 3]) + tf.reduce_sum(tf.square(dy), [1, 2, 3])
        if self.params.alpha == 2.0:
            return total
        return tf.pow(total + 1e-12, self.params.alpha / 2.0)


@hookimpl
def register_regularizers(register):
    register(TotalVariation)
