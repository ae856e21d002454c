"""Shared shape of the built-in embedding distances: optional normalization of both sides."""

from __future__ import annotations

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
