"""``guide``: l_r distance to the guiding image's activations (paper, Sec. 2).

R = sum over layers of w_l * mean(|a_l(p) - a_l(p_G)|^r); the mean (not the sum) keeps
weights comparable between layers of different sizes. ``pixels`` is the image itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
from pydantic import Field

from facerecon import Params, Regularizer, hookimpl
from facerecon.core.kinds import PrepareContext
from facerecon.ops.distances import layer_distance, layer_weights


class Guide(Regularizer):
    """Pulls the image's activations on chosen layers towards those of its guide."""

    name = "guide"

    class Params(Params):
        layers: dict[str, float] = layer_weights()
        r: float = Field(2.0, gt=0, description="the exponent of the l_r distance")

    def taps(self) -> Sequence[str]:
        return list(self.params.layers)

    def prepare(self, context: PrepareContext) -> None:
        _, acts = context.forward(context.guides, self.taps())
        self._guide = {name: tf.constant(a) for name, a in acts.items()}

    def __call__(self, images: tf.Tensor, taps: dict[str, tf.Tensor]) -> tf.Tensor:
        return layer_distance(taps, self._guide, self.params.layers, self.params.r)


@hookimpl
def register_regularizers(register):
    register(Guide)
