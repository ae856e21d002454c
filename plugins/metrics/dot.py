"""``dot``: negative dot product, -F(p) . e (paper, Sec. 2)."""

from __future__ import annotations

import tensorflow as tf

from facerecon import hookimpl
from facerecon.ops.distances import NormalizableMetric


class Dot(NormalizableMetric):
    """Negative dot product of embedding and target, optionally after normalizing both."""

    name = "dot"

    def __call__(self, embeddings: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        embeddings, targets = self.vectors(embeddings, targets)
        return -tf.reduce_sum(embeddings * targets, axis=-1)


@hookimpl
def register_metrics(register):
    register(Dot)
