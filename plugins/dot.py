"""``dot``: negative dot product, -F(p) . e (paper, Sec. 2)."""

from __future__ import annotations

import tensorflow as tf
from pydantic import Field

from facerecon import Metric, Params, hookimpl


class Dot(Metric):
    """Negative dot product of embedding and target, optionally after normalizing both."""

    name = "dot"

    class Params(Params):
        normalize: bool = Field(False, description="L2-normalize both vectors first (cosine)")

    def __call__(self, embeddings: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        if self.params.normalize:
            embeddings = tf.math.l2_normalize(embeddings, axis=-1)
            targets = tf.math.l2_normalize(targets, axis=-1)
        return -tf.reduce_sum(embeddings * targets, axis=-1)


@hookimpl
def register_metrics(register):
    register(Dot)
