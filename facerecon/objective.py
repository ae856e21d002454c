"""The objective L(p) = d(F(p), e) + sum_k w_k(t) R_k(p) over a whole batch.

One forward pass of the model yields the embedding and every tapped layer.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from facerecon.kinds import FaceModel, Metric, Regularizer
from facerecon.schedules import Schedule

if TYPE_CHECKING:
    from facerecon.context import PrepareContext

PIXELS = "pixels"


@dataclass
class Term:
    """A regularizer with its label, weight and schedule."""

    label: str
    regularizer: Regularizer
    weight: float
    schedule: Schedule


def build_forward(model: FaceModel, taps: Sequence[str]) -> keras.Model:
    """A Keras model returning [embedding, *taps] in one pass (``pixels`` excluded)."""
    net = model.network()
    layers = [t for t in taps if t != PIXELS]
    if not layers:
        return net
    return keras.Model(net.input, [net.output, *(net.get_layer(t).output for t in layers)])


class Forward:
    """Runs a face model with taps, as tensors inside a step or batched as numpy."""

    def __init__(self, model: FaceModel, taps: Sequence[str]) -> None:
        self.taps = list(dict.fromkeys(taps))
        self.layers = [t for t in self.taps if t != PIXELS]
        self.keras_model = build_forward(model, self.taps)
        self._compiled = tf.function(self.__call__, reduce_retracing=True)

    def __call__(self, images: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        out = self.keras_model(images, training=False)
        if not self.layers:
            return out, ({PIXELS: images} if PIXELS in self.taps else {})
        tapped = dict(zip(self.layers, out[1:], strict=True))
        if PIXELS in self.taps:
            tapped[PIXELS] = images
        return out[0], tapped

    def numpy(
        self, images: np.ndarray, batch: int = 16
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Embeddings and taps of many images, in chunks."""
        embs, taps = [], {t: [] for t in self.taps}
        for i in range(0, len(images), batch):
            e, t = self._compiled(tf.constant(images[i : i + batch], tf.float32))
            embs.append(e.numpy())
            for name, value in t.items():
                taps[name].append(value.numpy())
        return np.concatenate(embs), {k: np.concatenate(v) for k, v in taps.items()}


def forward_for(model: FaceModel, taps: Sequence[str] = ()) -> Forward:
    """The model's :class:`Forward` for these taps, built once per model instance."""
    cache = model.__dict__.setdefault("_forwards", {})
    key = tuple(dict.fromkeys(taps))
    if key not in cache:
        cache[key] = Forward(model, key)
    return cache[key]


class Objective:
    """Per-element loss terms for a batch whose element i aims at ``targets[i]``."""

    def __init__(
        self,
        model: FaceModel,
        metric: Metric,
        terms: list[Term],
        targets: np.ndarray,
        normalized: np.ndarray,
    ) -> None:
        self.model = model
        self.metric = metric
        self.terms = terms
        self.forward = forward_for(model, [t for term in terms for t in term.regularizer.taps()])
        self.targets = tf.constant(targets, tf.float32)
        # Targets given as normalized embeddings are compared with a normalized F(p).
        self.normalized = tf.constant(np.asarray(normalized, bool)[:, None])
        self.context: PrepareContext | None = None

    def prepare(self, context: PrepareContext) -> None:
        """Prepare every regularizer for this batch (once); kept for :meth:`for_batch`."""
        for term in self.terms:
            term.regularizer.prepare(context)
        self.context = context

    @property
    def guides(self) -> np.ndarray | None:
        """The guide image of every batch element, or None without guides."""
        return self.context.guides if self.context is not None else None

    def for_batch(self, size: int, guides: np.ndarray | None) -> Objective:
        """The same loss over another batch of ``size`` raw targets given per call.

        Regularizers are copied and prepared again for ``guides`` (one per element), so
        per-element state such as a guide's activations matches the new batch.
        """
        if self.context is None:
            raise RuntimeError("prepare() the objective before deriving other batches")
        terms = [replace(t, regularizer=copy.copy(t.regularizer)) for t in self.terms]
        targets = np.zeros((size, self.targets.shape[-1]), np.float32)
        other = Objective(self.model, self.metric, terms, targets, np.zeros(size, bool))
        other.prepare(replace(self.context, guides=guides))
        return other

    @property
    def labels(self) -> list[str]:
        return [t.label for t in self.terms]

    def weights_at(self, step: int) -> np.ndarray:
        """Every term's weight at ``step``, as one vector (a fixed-shape step input)."""
        return np.array([t.schedule.at(t.weight, step) for t in self.terms], np.float32)

    def __call__(
        self, images: tf.Tensor, weights: tf.Tensor, targets: tf.Tensor | None = None
    ) -> dict[str, tf.Tensor]:
        """Terms per element: total, embedding, each label, distance and cosine.

        ``targets`` replaces the construction-time targets for this call (same batch layout),
        for solvers that draw new targets every step.
        """
        targets = self.targets if targets is None else targets
        raw, taps = self.forward(images)
        emb = tf.where(self.normalized, tf.math.l2_normalize(raw, axis=-1), raw)
        out = {"embedding": self.metric(emb, targets)}
        total = out["embedding"]
        for k, term in enumerate(self.terms):
            value = term.regularizer(images, taps)
            out[term.label] = value
            total += weights[k] * value
        out["total"] = total
        out["distance"] = tf.norm(emb - targets, axis=-1)
        out["cosine"] = tf.reduce_sum(
            tf.math.l2_normalize(emb, axis=-1) * tf.math.l2_normalize(targets, axis=-1), -1
        )
        return out
