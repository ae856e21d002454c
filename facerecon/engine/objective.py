"""The objective L(p) = d(F(p), e) + sum_k w_k(t) R_k(p) over a whole batch.

One forward pass of the model yields the embedding and every tapped layer. With
transforms, that one pass sees K random draws of every image (a batch of K x B), and the
embedding term and every layer-tapping regularizer are their means over the K draws.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import numpy as np
import tensorflow as tf

from facerecon.core.kinds import (
    FaceModel,
    Metric,
    Parameterization,
    PrepareContext,
    Regularizer,
    Transform,
)
from facerecon.core.schedules import Schedule
from facerecon.ops.forward import PIXELS, forward_for


@dataclass
class Term:
    """A regularizer with its label, weight and schedule."""

    label: str
    regularizer: Regularizer
    weight: float
    schedule: Schedule


@dataclass
class Transforms:
    """K random draws of a chain of transforms, applied to every image each step."""

    chain: list[Transform] = field(default_factory=list)
    samples: int = 1
    seed: int = 0

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """(B, ...) -> (K * B, ...), sample-major: rows k*B .. k*B + B - 1 are draw k."""
        out = tf.tile(images, [self.samples, 1, 1, 1])
        for j, transform in enumerate(self.chain):
            out = transform(out, tf.random.experimental.stateless_fold_in(seed, j))
        return out


class Objective:
    """Per-element loss terms for a batch whose element i aims at ``targets[i]``."""

    def __init__(
        self,
        model: FaceModel,
        metric: Metric,
        terms: list[Term],
        targets: np.ndarray,
        normalized: np.ndarray,
        parameterization: Parameterization,
        transforms: Transforms | None = None,
    ) -> None:
        self.model = model
        self.metric = metric
        self.terms = terms
        self.parameterization = parameterization
        self.transforms = transforms if transforms is not None else Transforms()
        self.forward = forward_for(model, [t for term in terms for t in term.regularizer.taps()])
        self.targets = tf.constant(targets, tf.float32)
        # Targets given as normalized embeddings are compared with a normalized F(p).
        self.normalized = tf.constant(np.asarray(normalized, bool)[:, None])
        self.context: PrepareContext | None = None

    def prepare(self, context: PrepareContext) -> None:
        """Prepare every regularizer and the parameterization for this batch (once); kept
        for :meth:`for_batch`."""
        for term in self.terms:
            term.regularizer.prepare(context)
        self.parameterization.prepare(context)
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
        other = Objective(
            self.model,
            self.metric,
            terms,
            targets,
            np.zeros(size, bool),
            self.parameterization,
            self.transforms,
        )
        other.prepare(replace(self.context, guides=guides))
        return other

    @property
    def labels(self) -> list[str]:
        return [t.label for t in self.terms]

    def step_seed(self, step: int) -> np.ndarray:
        """The random transforms' seed for ``step``: a new, repeatable draw every step."""
        return np.array([self.transforms.seed, step], np.int32)

    def weights_at(self, step: int) -> np.ndarray:
        """Every term's weight at ``step``, as one vector (a fixed-shape step input)."""
        return np.array([t.schedule.at(t.weight, step) for t in self.terms], np.float32)

    def __call__(
        self,
        images: tf.Tensor,
        weights: tf.Tensor,
        targets: tf.Tensor | None = None,
        seed: tf.Tensor | None = None,
    ) -> dict[str, tf.Tensor]:
        """Terms per element: total, embedding, each label, distance and cosine.

        ``targets`` replaces the construction-time targets for this call (same batch layout),
        for solvers that draw new targets every step. With a ``seed`` (an int32 (2,) tensor,
        new every step) the model sees the spec's random transforms and every term that
        depends on the model is the mean over the draws; without one it sees the images
        as they are (how results are reported).
        """
        targets = self.targets if targets is None else targets
        active = seed is not None and bool(self.transforms.chain)
        draws = self.transforms.samples if active else 1
        seen = self.transforms(images, seed) if active else images
        raw, taps = self.forward(seen)
        normalized = tf.tile(self.normalized, [draws, 1])
        emb = tf.where(normalized, tf.math.l2_normalize(raw, axis=-1), raw)
        goal = tf.tile(targets, [draws, 1])

        def mean_over_draws(values: tf.Tensor) -> tf.Tensor:
            return tf.reduce_mean(tf.reshape(values, [draws, -1]), axis=0)

        out = {"embedding": mean_over_draws(self.metric(emb, goal))}
        total = out["embedding"]
        for k, term in enumerate(self.terms):
            value = self._regularizer(term.regularizer, images, taps, draws)
            out[term.label] = value
            total += weights[k] * value
        out["total"] = total
        out["distance"] = mean_over_draws(tf.norm(emb - goal, axis=-1))
        unit = tf.math.l2_normalize(emb, axis=-1) * tf.math.l2_normalize(goal, axis=-1)
        out["cosine"] = mean_over_draws(tf.reduce_sum(unit, -1))
        return out

    @staticmethod
    def _regularizer(
        regularizer: Regularizer, images: tf.Tensor, taps: dict[str, tf.Tensor], draws: int
    ) -> tf.Tensor:
        """A prior on the images themselves, or the mean over draws of one on model layers."""
        layers = [t for t in regularizer.taps() if t != PIXELS]
        if draws == 1 or not layers:
            return regularizer(images, {**taps, PIXELS: images})
        split = {name: tf.split(taps[name], draws) for name in layers}
        values = [
            regularizer(images, {**{n: parts[k] for n, parts in split.items()}, PIXELS: images})
            for k in range(draws)
        ]
        return tf.reduce_mean(tf.stack(values), axis=0)
