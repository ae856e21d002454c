"""The objects handed to plugins: what a regularizer sees at prepare time, what a
lifecycle hook sees during a run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from facerecon.kinds import FaceModel
    from facerecon.spec import Spec


@dataclass
class PrepareContext:
    """What a regularizer may use once, before the first step."""

    model: FaceModel
    #: images (N, H, W, 3) in [0, 1] -> (embeddings, {tap: activations}); batched internally
    forward: Callable[[np.ndarray, Sequence[str]], tuple[np.ndarray, dict[str, np.ndarray]]]
    #: the guide of every batch element (B, H, W, 3), or None when the spec has no guides
    guides: np.ndarray | None
    #: reads a collection of face images (``builtin:lfw``, a folder, a photo) as model chips
    load_images: Callable[[str, bool], np.ndarray]
    seed: int = 0


@dataclass
class StepInfo:
    """One solver step, as lifecycle hooks see it."""

    step: int
    #: per batch element: "total", "embedding", each regularizer label, "distance", "cosine"
    terms: dict[str, np.ndarray]
    #: the weight in force for each regularizer label
    weights: dict[str, float]
    #: the current batch of images (a tf.Variable or array); read it only when needed
    images: Any
    #: further scalar metrics a solver reports, logged as they are (e.g. ``train/loss/total``)
    metrics: dict[str, float] = field(default_factory=dict)

    def images_numpy(self) -> np.ndarray:
        images = self.images
        return images.numpy() if hasattr(images, "numpy") else np.asarray(images)


@dataclass
class BatchElement:
    """Which target, guide and restart one batch element solves."""

    target: int
    guide: int | None
    restart: int

    @property
    def label(self) -> str:
        guide = "-" if self.guide is None else str(self.guide)
        return f"t{self.target}-g{guide}-r{self.restart}"


@dataclass
class RunResult:
    """The outcome of a run: every candidate, and the best one per target."""

    images: np.ndarray  # (B, H, W, 3)
    terms: dict[str, np.ndarray]  # final per-element terms
    best: list[int]  # batch index of the kept candidate, per target
    steps: int
    stop_reason: str
    run_id: str | None = None
    #: what the solver handed back besides images (the feedforward solver: ``generator``)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """One run, from validated spec to result; lifecycle hooks share it."""

    spec: Spec
    model: FaceModel
    elements: list[BatchElement]
    targets: np.ndarray  # (T, D) target embeddings
    target_images: list[np.ndarray | None]  # the photo chip of each target, if any
    guide_images: list[np.ndarray]
    labels: list[str]  # regularizer labels, in spec order
    total_steps: int
    result: RunResult | None = None
    #: free space for lifecycle plugins (e.g. the MLflow run id)
    extras: dict[str, Any] = field(default_factory=dict)
