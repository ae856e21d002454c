"""A run as lifecycle hooks see it: the batch's layout, the context, the result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from facerecon.judging import Judges
    from facerecon.kinds import FaceModel
    from facerecon.spec import Spec


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
    #: per kept candidate (one per target): the judges' scores (see facerecon.judging)
    judges: list[dict[str, Any]] = field(default_factory=list)
    #: what the solver handed back besides images (the feedforward solver: ``generator``)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def failure(self) -> str | None:
        """Why a run that came back is still a failure (it diverged), else None."""
        if self.stop_reason.startswith("diverged"):
            return f"{self.stop_reason} at step {self.steps - 1}"
        bad = [key for key, values in self.terms.items() if not np.all(np.isfinite(values))]
        if bad:
            return f"diverged (final {', '.join(bad)} not finite)"
        return None


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
    #: who scores the kept reconstructions after the solve
    judges: Judges | None = None
    #: free space for lifecycle plugins (e.g. the MLflow run id)
    extras: dict[str, Any] = field(default_factory=dict)
    #: when the run started (``time.time()``; the runner sets it before any loading)
    started: float = field(default_factory=time.time)
