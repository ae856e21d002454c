"""``l2``: squared euclidean distance in embedding space, ||F(p) - e||^2 (paper, Sec. 2)."""

from __future__ import annotations

import tensorflow as tf

from facerecon import hookimpl
from facerecon.ops.distances import NormalizableMetric


class L2(NormalizableMetric):
    """Squared l2 distance between embedding and target, optionally after normalizing both."""

    name = "l2"

    def __call__(self, embeddings: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        embeddings, targets = self.vectors(embeddings, targets)
        return tf.reduce_sum(tf.square(embeddings - targets), axis=-1)


@hookimpl
def register_metrics(register):
    register(L2)
