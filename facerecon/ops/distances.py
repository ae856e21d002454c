"""Distances: the shared shape of the built-in embedding metrics (optional normalization of
both sides), and the weighted per-layer distance of activations."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from pydantic import Field

from facerecon.core.kinds import Metric, Params


class NormalizableMetric(Metric):
    """A metric whose ``normalize`` parameter L2-normalizes embedding and target first."""

    class Params(Params):
        normalize: bool = Field(False, description="L2-normalize both vectors first")

    def vectors(self, embeddings: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The two sides as the metric compares them."""
        if self.params.normalize:
            return tf.math.l2_normalize(embeddings, -1), tf.math.l2_normalize(targets, -1)
        return embeddings, targets


def layer_distance(
    taps: dict[str, tf.Tensor], others: dict[str, tf.Tensor], layers: dict[str, float], r: float
) -> tf.Tensor:
    """Per element, sum over layers of w_l * mean(|a_l - b_l|^r): the mean, not the sum,
    keeps weights comparable between layers of different sizes."""
    total = 0.0
    for name, weight in layers.items():
        diff = tf.abs(taps[name] - others[name])
        axes = list(range(1, diff.shape.rank))
        total += weight * tf.reduce_mean(tf.pow(diff + 1e-12, r), axis=axes)
    return total


def layer_weights() -> Any:
    """The pydantic field of a regularizer's ``layers``: layer name -> weight, at least one."""
    return Field(
        default_factory=lambda: {"pixels": 1.0},
        description="layer name -> weight; `pixels` is the image itself",
        min_length=1,
    )
