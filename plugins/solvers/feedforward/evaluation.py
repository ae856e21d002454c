"""Evaluating generators on held-out embeddings (paper, Table 1 and Fig. 10).

Every method - each generator, and the spec's iterative solver - is scored with the same
objective and weights on the same targets: mean total loss, mean l2 embedding distance,
mean normalized dot product, and the fraction within a verification threshold; and by the
spec's judges (:mod:`facerecon.judges.scoring`: other recognizers' cosines to the target photos,
whether a detector finds a face), as means over the targets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from facerecon.core.context import RunContext
from facerecon.core.errors import FaceReconError
from facerecon.core.spec import Spec
from facerecon.engine.objective import Objective
from facerecon.engine.runner import best_per_target

from .generator import Generator


@dataclass
class Scores:
    """One method's kept reconstruction per target and its terms."""

    label: str
    source: str
    images: np.ndarray  # (T, S, S, 3)
    terms: dict[str, np.ndarray]  # per target
    images_per_second: float = float("nan")
    #: the judges' means over the targets (``judge/<model>/type1``, ``judge/mtcnn/face``...)
    judges: dict[str, float] = field(default_factory=dict)

    def summary(self, threshold: float) -> dict[str, Any]:
        return {
            "method": self.label,
            "source": self.source,
            "mean_total": float(np.mean(self.terms["total"])),
            "mean_distance": float(np.mean(self.terms["distance"])),
            "mean_cosine": float(np.mean(self.terms["cosine"])),
            "verified": float(np.mean(self.terms["distance"] < threshold)),
            "images_per_second": self.images_per_second,
            **self.judges,
        }


@dataclass
class Evaluation:
    """Generators and the iterative solver, scored on one spec's targets."""

    spec: Spec
    threshold: float
    size: int
    target_images: list[np.ndarray | None]
    generators: list[Scores] = field(default_factory=list)
    iterative: Scores | None = None
    baselines: list[Scores] = field(default_factory=list)
    iterative_run_id: str | None = None
    run_id: str | None = None  # the evaluation's own MLflow run

    def methods(self) -> list[Scores]:
        return self.generators + ([self.iterative] if self.iterative else []) + self.baselines

    def ratio(self, scores: Scores) -> float:
        """Mean total loss of ``scores`` over that of the iterative solver (paper: 1.6)."""
        if self.iterative is None:
            return float("nan")
        return float(np.mean(scores.terms["total"]) / np.mean(self.iterative.terms["total"]))

    def summary(self) -> list[dict[str, Any]]:
        """One row per method (Table 1), with the loss ratio to the iterative solver."""
        return [{**m.summary(self.threshold), "loss_ratio": self.ratio(m)} for m in self.methods()]

    def summary_columns(self) -> dict[str, list]:
        rows = self.summary()
        return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}

    def table(self) -> dict[str, list]:
        """Per method and target: every term (the Fig. 10 data), as columns."""
        columns: dict[str, list] = {"method": [], "target": []}
        for m in self.methods():
            for t in range(len(m.terms["total"])):
                columns["method"].append(m.label)
                columns["target"].append(t)
                for key, values in m.terms.items():
                    columns.setdefault(key, []).append(float(values[t]))
        return columns


def kept(
    context: RunContext, objective: Objective, images: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Score every batch element; keep per target the one nearest its target (Sec. 3)."""
    terms = objective(tf.constant(images, tf.float32), tf.constant(weights))
    terms = {k: v.numpy() for k, v in terms.items()}
    best = best_per_target(context, terms["distance"])
    return images[best], {k: v[best] for k, v in terms.items()}


def speed(generator: Generator, batch: int = 32, repeats: int = 3) -> float:
    """Images per second at ``batch``, after a warm-up call (tracing excluded)."""
    c = generator.config
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((batch, c.embedding_size)).astype(np.float32)
    guides = rng.random((batch, c.input_size, c.input_size, 3), np.float32) if c.guided else None
    generator.generate(embeddings, guides, batch)
    start = time.perf_counter()
    for _ in range(repeats):
        generator.generate(embeddings, guides, batch)
    return batch * repeats / (time.perf_counter() - start)


def score_generator(
    generator: Generator,
    label: str,
    source: str,
    context: RunContext,
    objective: Objective,
    weights: np.ndarray,
    batch: int = 32,
) -> Scores:
    """A generator's one-pass reconstructions of the spec's targets, scored."""
    generator.check_model(context.model, source)
    guides = None
    strangers = generator.config.own_guides(context.model)
    if strangers is not None:
        guides = strangers.means(objective.targets.numpy())
    elif generator.guided:
        if objective.guides is None:
            raise FaceReconError(
                f"{source}: the {generator.config.describe()} needs guides; the spec has none"
            )
        guides = objective.guides
    images = generator.generate(objective.targets.numpy(), guides, batch)
    best_images, terms = kept(context, objective, images, weights)
    return Scores(label, source, best_images, terms, speed(generator, batch))


def evaluate(
    spec: Spec,
    generators: list[str | Generator],
    *,
    iterative: bool = True,
    threshold: float = 0.6,
    pm=None,
    batch: int = 32,
) -> Evaluation:
    """Score generators (URIs or loaded) and the spec's iterative solver on its targets.

    The spec gives the held-out targets, the guides, the objective and the iterative solver
    (run as an ordinary run, so lifecycle hooks and tracking see it). Every method is scored
    with the weights in force at the iterative solver's last step. Logging it is the caller's
    (:func:`~.tracking.log_evaluation`).
    """
    from facerecon.core.registry import plugin_manager, registry
    from facerecon.engine.runner import prepare
    from facerecon.engine.runner import run as run_spec

    from . import store

    if spec.solver.name == "feedforward":
        raise FaceReconError(
            "solver.name: 'feedforward'; an evaluation compares generators with an iterative "
            "solver: give the spec an iterative one (adam, sgd)"
        )
    pm = pm or plugin_manager()
    loaded = [(g, store.load(g)) if isinstance(g, str) else ("generator", g) for g in generators]
    context, objective, solver = prepare(spec, registry(pm))
    for source, generator in loaded:  # every mismatch is found before the slow part
        generator.check_model(context.model, source)
    steps = getattr(solver.params, "steps", 1)
    weights = objective.weights_at(max(steps - 1, 0))
    evaluation = Evaluation(spec, threshold, context.model.input_size, context.target_images)
    for i, (source, generator) in enumerate(loaded):
        evaluation.generators.append(
            score_generator(generator, f"g{i}", source, context, objective, weights, batch)
        )
    if objective.guides is not None:  # the baseline that knows nothing of the target
        images, terms = kept(context, objective, objective.guides, weights)
        evaluation.baselines.append(Scores("guide", "the guide image itself", images, terms))
    if iterative:
        result = run_spec(spec, pm=pm)
        images, terms = kept(context, objective, result.images, weights)
        evaluation.iterative = Scores("iterative", spec.solver.name, images, terms)
        evaluation.iterative_run_id = result.run_id
    if context.judges is not None:
        _judge(evaluation, context)
    return evaluation


def _judge(evaluation: Evaluation, context: RunContext) -> None:
    """Every method's kept images scored by the run's judges, as means over the targets."""
    from facerecon.judges import scoring as judging

    entries = context.target_entries
    for method in evaluation.methods():
        scores = judging.score(context.judges, list(method.images), entries)
        method.judges = judging.means(scores)
