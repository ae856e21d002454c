"""Training a generator on the objective the iterative solvers minimize (paper, Sec. 4).

Every step draws a batch of random embeddings, generates their images in one pass and takes
an Adam step on the generator's weights against the mean of the objective's total loss,
each embedding being its own image's target. With the spec's ``transforms``, the model sees
fresh seeded draws of every generated image each step, as in the iterative solver. With
guides, the batch rows take every guide in turn; the objective is prepared once per such
layout ("phase"). A generator with its own guides (nearest strangers) gets each sampled
embedding's guide as an input of the one compiled step; a photo sampler's photos come in
the same way, for the pixel and perceptual terms that hold each image to the photo its
template came from.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from facerecon.core.kinds import StepInfo
from facerecon.engine.objective import Objective
from facerecon.faces.neighbours import Strangers
from facerecon.ops.distances import layer_distance
from facerecon.ops.forward import forward_for

from .checkpoint import Checkpoints
from .generator import Generator
from .sampling import EmbeddingSampler, GeneratedSampler, PhotoSampler


@dataclass(frozen=True)
class Settings:
    """How long and how a training runs."""

    steps: int
    batch: int
    lr: float
    seed: int
    report_every: int
    checkpoint_every: int
    #: with own guides: weight of each image's mean squared pixel distance to its guide
    guide_weight: float = 0.0
    #: with a photo sampler: weight of each image's mean absolute distance to its photo
    photo_weight: float = 0.0
    #: with a photo sampler: layer -> weight of the mean absolute distance of activations
    photo_layers: dict[str, float] = field(default_factory=dict)
    #: step -> learning rate from that step on
    lr_drops: dict[int, float] = field(default_factory=dict)
    #: with generated samples: weight of each predicted latent's squared distance to its own
    latent_weight: float = 0.0
    #: whether the objective is put on the training step's images
    train_objective: bool = True

    def lr_at(self, step: int) -> float:
        """The learning rate in force at ``step`` (0-based): the last drop at or before it."""
        passed = [s for s in self.lr_drops if s <= step]
        return self.lr_drops[max(passed)] if passed else self.lr


def distinct(guides: np.ndarray) -> np.ndarray:
    """The different guide images among per-element guides, in order of first use."""
    _, first = np.unique(guides.reshape(len(guides), -1), axis=0, return_index=True)
    return guides[np.sort(first)]


def phases(guides: np.ndarray | None, batch: int) -> list[np.ndarray | None]:
    """Each phase's batch of guides: the distinct guides in turn, cycled to fill batches."""
    if guides is None:
        return [None]
    unique = distinct(guides)
    count = math.ceil(len(unique) / batch)
    order = np.resize(np.arange(len(unique)), count * batch)
    return [unique[order[p * batch : (p + 1) * batch]] for p in range(count)]


def _means(terms: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {k: tf.reduce_mean(v) for k, v in terms.items()}


def metric_name(key: str) -> str:
    """How a term is called in logs (the mlflow-tracking plugin's naming)."""
    return key if key in ("distance", "cosine") else f"loss/{key}"


class Trainer:
    """Trains one generator on an objective; reports through ``on_step`` like any solver."""

    def __init__(
        self,
        generator: Generator,
        objective: Objective,
        sampler: EmbeddingSampler | PhotoSampler | GeneratedSampler,
        settings: Settings,
        checkpoints: Checkpoints | None = None,
        strangers: Strangers | None = None,
    ) -> None:
        self.generator = generator
        self.strangers = strangers
        self.objective = objective
        self.sampler = sampler
        self.settings = settings
        self.checkpoints = checkpoints
        self.optimizer = keras.optimizers.Adam(learning_rate=settings.lr)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.steps_per_second = float("nan")

    def _train_step(self, objective: Objective, guides: np.ndarray | None) -> Callable:
        generator, optimizer = self.generator, self.optimizer
        variables = generator.network.trainable_variables
        fixed = None if guides is None else tf.constant(guides, tf.float32)
        anchor, held = self.settings.guide_weight, self.settings.photo_weight
        pulled, judged = self.settings.latent_weight, self.settings.train_objective
        layers = self.settings.photo_layers
        features = forward_for(objective.model, list(layers)) if layers else None

        @tf.function
        def step(
            embeddings: tf.Tensor,
            weights: tf.Tensor,
            seed: tf.Tensor,
            own: tf.Tensor | None = None,
            photos: tf.Tensor | None = None,
            latents: tf.Tensor | None = None,
        ) -> dict[str, tf.Tensor]:
            with tf.GradientTape() as tape:
                if generator.latent:
                    made = generator.network([embeddings], training=True)
                    distance = tf.reduce_mean(
                        tf.square(made - latents), axis=list(range(1, len(made.shape)))
                    )
                    terms = {"latent": distance, "total": pulled * distance}
                    if judged:
                        images = generator.renderer.to_images(made)
                        scored = objective(images, weights, targets=embeddings, seed=seed)
                        terms = {**scored, "latent": distance}
                        terms["total"] = scored["total"] + pulled * distance
                else:
                    images = generator(embeddings, fixed if own is None else own, training=True)
                    terms = objective(images, weights, targets=embeddings, seed=seed)
                if own is not None and anchor > 0:
                    # the guide regularizer's pixels term, for guides that change every step
                    distance = tf.reduce_mean(tf.square(images - own), axis=[1, 2, 3])
                    terms = {**terms, "guide_pixels": distance}
                    terms["total"] = terms["total"] + anchor * distance
                if photos is not None and held > 0:
                    # L1, not L2: the squared error's optimum is the blurred mean of likely faces
                    distance = tf.reduce_mean(tf.abs(images - photos), axis=[1, 2, 3])
                    terms = {**terms, "photo_pixels": distance}
                    terms["total"] = terms["total"] + held * distance
                if photos is not None and features is not None:
                    # untransformed: an image and its photo are compared where they align
                    _, taps = features(tf.concat([images, photos], 0))
                    n = tf.shape(images)[0]
                    made = {k: v[:n] for k, v in taps.items()}
                    real = {k: v[n:] for k, v in taps.items()}
                    distance = layer_distance(made, real, layers, 1.0)
                    terms = {**terms, "photo_features": distance}
                    terms["total"] = terms["total"] + distance
                loss = tf.reduce_mean(terms["total"])
            grads = tape.gradient(loss, variables)

            def update() -> tf.Tensor:
                optimizer.apply_gradients(zip(grads, variables, strict=True))
                return tf.constant(True)

            # A loss that is not finite stops the training: its update would leave weights
            # that are not finite in the last report and in the generator handed back.
            tf.cond(tf.math.is_finite(loss), update, lambda: tf.constant(False))
            return _means(terms)

        return step

    @functools.cached_property
    def _probe(self) -> Callable:
        """Generates the run's own targets (the probes) and scores them, without training."""
        generator, objective = self.generator, self.objective
        targets = objective.targets
        guides = None
        if self.strangers is not None:
            guides = tf.constant(self.strangers.means(targets.numpy()))
        elif generator.guided:
            guides = tf.constant(objective.guides, tf.float32)

        @tf.function
        def probe(weights: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
            images = generator(targets, guides)
            return images, objective(images, weights)

        return probe

    def probe(self, weights: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The run's targets generated in one pass, with their terms."""
        images, terms = self._probe(tf.constant(weights))
        return images.numpy(), {k: v.numpy() for k, v in terms.items()}

    def run(self, on_step: Callable[[StepInfo], None]) -> tuple[int, str]:
        """Train up to ``settings.steps``; returns (steps done, why it stopped).

        ``on_step`` gets the probes' terms and images every ``report_every`` steps and at the
        end, with the training batch's mean terms since the last report as ``metrics``. An
        interruption or error saves a checkpoint first (when there is a folder for them).
        """
        s, objective, generator = self.settings, self.objective, self.generator
        # Slots made now, not inside the first call: that would trace every step twice.
        self.optimizer.build(generator.network.trainable_variables)
        start = 0
        if self.checkpoints is not None:
            start = self.checkpoints.attach(
                generator.config,
                generator.network,
                self.optimizer,
                self.step,
                generator.mean,
                generator.variance,
            )
        steps = [
            self._train_step(objective.for_batch(s.batch, g), g)
            for g in phases(objective.guides, s.batch)
        ]
        strangers = self.strangers
        probe = self._probe
        window: list[dict[str, float]] = []
        clock = time.perf_counter()

        def report(t: int) -> None:
            nonlocal window, clock
            metrics = {}
            if window:
                self.steps_per_second = len(window) / (time.perf_counter() - clock)
                for key in window[0]:
                    values = [w[key] for w in window]
                    metrics[f"train/{metric_name(key)}"] = float(np.mean(values))
                metrics["train/steps_per_second"] = self.steps_per_second
                # the optimizer's own rate: what trained, whatever the schedule says
                metrics["train/lr"] = float(self.optimizer.learning_rate)
            weights = objective.weights_at(t)
            images, terms = probe(tf.constant(weights))
            named = dict(zip(objective.labels, map(float, weights), strict=True))
            terms = {k: v.numpy() for k, v in terms.items()}
            on_step(StepInfo(t, terms, named, images, metrics))
            window = []
            clock = time.perf_counter()

        reported, reason, done = start - 1, "max steps", start
        try:
            for t in range(start, s.steps):
                rng = np.random.default_rng([s.seed, t])  # resumable: step t draws the same
                sampled, extra = self.sampler.draw(rng, s.batch)
                own = None if strangers is None else tf.constant(strangers.means(sampled))
                extra = None if extra is None else tf.constant(extra)
                photos, latents = (None, extra) if generator.latent else (extra, None)
                # from the step, not the optimizer's counter: a resume lands on the same rate
                if t == start or t in s.lr_drops:
                    self.optimizer.learning_rate.assign(s.lr_at(t))
                weights = tf.constant(objective.weights_at(t))
                seed = tf.constant(objective.step_seed(t))
                terms = steps[t % len(steps)](
                    tf.constant(sampled), weights, seed, own, photos, latents
                )
                out = {k: float(v) for k, v in terms.items()}
                if not math.isfinite(out["total"]):
                    reason = f"diverged at step {t} (loss is not finite)"
                    break
                done = t + 1
                self.step.assign(done)
                window.append(out)
                if t % s.report_every == 0 or done == s.steps:
                    report(t)
                    reported = t
                if self.checkpoints is not None and done % s.checkpoint_every == 0:
                    self.checkpoints.save(done)
        except BaseException:
            if self.checkpoints is not None and done > start:
                self.checkpoints.save(done)
            raise
        if done == start:
            reason = reason if reason != "max steps" else f"already trained {done} steps"
        if reported != done - 1 or done == start:
            report(max(done - 1, 0))
        if self.checkpoints is not None and done > start and not reason.startswith("diverged"):
            self.checkpoints.save(done)
        return done, reason
