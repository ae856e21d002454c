"""``l2``: squared euclidean distance in embedding space, ||F(p) - e||^2 (paper, Sec. 2)."""

from __future__ import annotations

import tensorflow as tf
from pydantic import Field

from facerecon import Metric, Params, hookimpl


class L2(Metric):
    """Squared l2 distance between embedding and target, optionally after normalizing both."""

    name = "l2"

    class Params(Params):
        normalize: bool = Field(False, description="L2-normalize both vectors first")

    def __call__(self, embeddings: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        if self.params.normalize:
            embeddings = tf.math.l2_normalize(embeddings, axis=-1)
            targets = tf.math.l2_normalize(targets, axis=-1)
        return tf.reduce_sum(tf.square(embeddings - targets), axis=-1)


@hookimpl
def register_metrics(register):
    register(L2)
