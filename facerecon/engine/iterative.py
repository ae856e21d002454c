"""The iterative solvers' shared loop: one compiled step, any Keras optimizer.

``sgd`` and ``adam`` differ only in the optimizer they build. What is optimized are the
parameters of the objective's parameterization (the pixels themselves, or e.g. a Fourier
spectrum); every step draws new random transforms when the spec has them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from pydantic import BaseModel, ConfigDict, Field

from facerecon.core.kinds import Objective, Params, Solver, SolveResult, StepInfo
from facerecon.ops import pyramid


class LapNormalize(BaseModel):
    """Per-band normalization of the gradient (the deepdream technique the paper uses)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    levels: int = Field(4, ge=1, le=8, description="pyramid levels")


class IterativeParams(Params):
    # NaN or infinity in a step size or tolerance is never meant
    model_config = ConfigDict(allow_inf_nan=False)
    steps: int = Field(400, ge=1, description="maximum number of steps")
    # images live in [0, 1]: a rate beyond 1000 only makes a run diverge
    lr: float = Field(0.01, gt=0, le=1000, description="learning rate")
    tolerance: float = Field(
        0.0,
        ge=0,
        description="stop when the mean total loss changes less than this "
        "(relative) for `patience` steps; 0 = run all steps",
    )
    patience: int = Field(10, ge=1, description="steps below tolerance before stopping")
    scale_gradient: bool = Field(
        False,
        description="divide each image's gradient by its mean absolute value (steps of "
        "about `lr` per pixel, whatever the loss's scale)",
    )
    lap_normalize: LapNormalize | None = Field(
        None, description="Laplacian-pyramid gradient normalization"
    )


class IterativeSolver(Solver):
    """Gradient descent on the parameterization's parameters, images kept in [0, 1]."""

    Params = IterativeParams

    @abstractmethod
    def optimizer(self) -> keras.optimizers.Optimizer:
        """A fresh optimizer for one solve."""

    def solve(
        self, objective: Objective, init: np.ndarray, on_step: Callable[[StepInfo], None]
    ) -> SolveResult:
        p = self.params
        param = objective.parameterization
        params = tf.Variable(param.from_images(np.asarray(init, np.float32)), name="params")
        optimizer = self.optimizer()
        # Its slots exist before the first call, so the step is traced once, not twice.
        optimizer.build([params])
        levels = p.lap_normalize.levels if p.lap_normalize else 0

        @tf.function
        def step(weights: tf.Tensor, seed: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
            with tf.GradientTape() as tape:
                images = param.to_images(params)
                terms = objective(images, weights, seed=seed)
                prior = param.penalty(params)
                if prior is not None:
                    terms = {**terms, "prior": prior, "total": terms["total"] + prior}
                loss = tf.reduce_sum(terms["total"])
            grad = tape.gradient(loss, params)
            if levels:
                grad = pyramid.normalize(grad, levels)
            if p.scale_gradient:
                axes = list(range(1, grad.shape.rank))
                grad = grad / (tf.reduce_mean(tf.abs(grad), axis=axes, keepdims=True) + 1e-12)
            optimizer.apply_gradients([(grad, params)])
            param.constrain(params)
            return terms, images

        previous, calm, reason, t = None, 0, "max steps", 0
        for t in range(p.steps):
            weights = objective.weights_at(t)
            terms, images = step(tf.constant(weights), tf.constant(objective.step_seed(t)))
            terms = {k: v.numpy() for k, v in terms.items()}
            named = dict(zip(objective.labels, map(float, weights), strict=True))
            on_step(StepInfo(t, terms, named, images))
            current = float(np.mean(terms["total"]))
            if not np.isfinite(current):
                reason = "diverged (loss is not finite)"
                break
            if p.tolerance and previous is not None:
                calm = calm + 1 if abs(current - previous) <= p.tolerance * abs(previous) else 0
                if calm >= p.patience:
                    reason = f"tolerance {p.tolerance} reached"
                    break
            previous = current
        final = param.to_images(params).numpy()
        frames = param.frames(params)
        return SolveResult(
            images=final,
            steps=t + 1,
            stop_reason=reason,
            frames=None if frames is None else frames.numpy(),
        )
