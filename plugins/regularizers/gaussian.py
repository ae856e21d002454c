"""``gaussian``: Gaussian activation prior from a collection of faces (Appendix A, Eq. 5).

R = sum_n nu (a_n - v_n)^2 s^2 / (s_n^2 + nu s^2), s = max_n s_n, summed over the nodes n of
each chosen layer (times its weight); v_n and s_n are the mean and standard deviation of
the activations over the collection, computed once before the run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from pydantic import Field

from facerecon import Params, Regularizer, hookimpl
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import PrepareContext
from facerecon.ops.distances import layer_weights


class GaussianPrior(Regularizer):
    """Favours activations typical of a face collection instead of one guide's."""

    name = "gaussian"

    class Params(Params):
        layers: dict[str, float] = layer_weights()
        nu: float = Field(0.1, gt=0, description="smoothing of Eq. 5")
        images: str = Field("builtin:lfw", description="the face collection")
        align: bool = Field(False, description="detect and align faces of the collection")

    def taps(self) -> Sequence[str]:
        return list(self.params.layers)

    def prepare(self, context: PrepareContext) -> None:
        source = self.params.images
        collection = context.load_images(source, self.params.align)
        if len(collection) < 2:  # one image has no spread: Eq. 5 would be 0/0
            raise FaceReconError(
                f"gaussian.images: {source!r} names {len(collection)} image(s); the prior "
                "needs two or more different faces (e.g. builtin:lfw or a folder)"
            )
        _, acts = context.forward(collection, self.taps())
        self.set_statistics({name: (a.mean(axis=0), a.std(axis=0)) for name, a in acts.items()})

    def set_statistics(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Use given (mean, std) per layer; factor nu s^2 / (s_n^2 + nu s^2) once."""
        nu = self.params.nu
        self._mean, self._scale = {}, {}
        for name, (mean, std) in stats.items():
            smax2 = float(np.max(std)) ** 2
            if not smax2 > 0:  # a constant collection: Eq. 5 would be 0/0
                raise FaceReconError(
                    f"gaussian.images: every image of {self.params.images!r} is the same at "
                    f"layer {name!r} (spread 0); give a collection of different faces"
                )
            self._mean[name] = tf.constant(mean, tf.float32)
            self._scale[name] = tf.constant(nu * smax2 / (std**2 + nu * smax2), tf.float32)

    def __call__(self, images: tf.Tensor, taps: dict[str, tf.Tensor]) -> tf.Tensor:
        total = 0.0
        for name, weight in self.params.layers.items():
            sq = tf.square(taps[name] - self._mean[name]) * self._scale[name]
            total += weight * tf.reduce_sum(sq, axis=list(range(1, sq.shape.rank)))
        return total


@hookimpl
def register_regularizers(register):
    register(GaussianPrior)
