"""What lifecycle hooks see: a run (its batch layout, judges, result) and a sweep (its
variants and their outcomes)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from facerecon.core.kinds import Detector, FaceModel
    from facerecon.core.spec import Spec


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
    #: per kept candidate (one per target): the judges' scores (see facerecon.judges.scoring)
    judges: list[dict[str, Any]] = field(default_factory=list)
    #: what the solver handed back besides images (the feedforward solver: ``generator``)
    extras: dict[str, Any] = field(default_factory=dict)
    #: the parameterization's whole pictures per candidate (a generator's frames), if any
    frames: np.ndarray | None = None

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
    #: the tracking run this run logs to (the tracker sets it before the solve), else None
    run_id: str | None = None
    #: the solver's starting images, one per batch element (the solve consumes them)
    init: np.ndarray | None = None
    #: per entry of the spec's ``targets``: what the judges compare with (its photo, if any)
    target_entries: list[Any] = field(default_factory=list)
    #: which face was taken from a target photo that shows several (its largest)
    target_faces: list[str] = field(default_factory=list)
    #: free space for lifecycle plugins
    extras: dict[str, Any] = field(default_factory=dict)
    #: per plugin kind: the terms of use of the weights it runs on, when they have their own
    weights_terms: dict[str, str] = field(default_factory=dict)
    #: when the run started (``time.time()``; the runner sets it before any loading)
    started: float = field(default_factory=time.time)


@dataclass
class References:
    """One judge model's embeddings of a target's photos (rows L2-normalized)."""

    type1: np.ndarray | None  # (D,) the photo the template came from, if known
    type2: np.ndarray  # (N, D) other photos of the person
    impostors: np.ndarray | None = None  # (M, D) photos of other people


@dataclass
class Judges:
    """The judge models and detector of a run, with every target's reference photos."""

    models: list[FaceModel]
    detector: Detector | None
    #: per judge model name, per entry of the spec's ``targets``
    references: dict[str, list[References]] = field(default_factory=dict)
    #: judges the spec left to the default that are not available here, with the reason
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class Variant:
    """One point of a sweep."""

    name: str
    overrides: dict[str, Any]
    spec: Spec


@dataclass
class VariantOutcome:
    """What one variant produced (kept small: it crosses process boundaries)."""

    name: str
    status: str  # FINISHED, FAILED or KILLED (the sweep stopped before it completed)
    run_id: str | None = None
    error: str | None = None
    distance: float | None = None
    cosine: float | None = None
    images: list[np.ndarray] = field(default_factory=list)  # kept image per target
    #: the judges' scores, mean over targets (``judge/<model>/<score>``: facerecon.judges.scoring)
    judges: dict[str, float] = field(default_factory=dict)
    #: the judges' raw scores per target (:func:`facerecon.judges.scoring.score`'s entries)
    scores: list[dict] = field(default_factory=list)
    seconds: float | None = None  # wall time inside the worker
    worker: str | None = None  # host:pid that ran it
    built_model: bool = False  # False when the worker reused a model built for an earlier one


@dataclass
class SweepContext:
    """A sweep, as lifecycle hooks see it."""

    spec: Spec
    variants: list[Variant]
    #: where the variants run, e.g. "local, 2 worker processes" or "ray (local runtime)"
    executor: str = "local"
    outcomes: list[VariantOutcome] = field(default_factory=list)
    #: set when the sweep itself stopped early (e.g. KeyboardInterrupt)
    error: BaseException | None = None
    #: the tracking run the variants' runs are children of (given to resume one), else None
    run_id: str | None = None
    #: tags for the sweep's tracking run, besides the tracker's own
    tags: dict[str, str] = field(default_factory=dict)
    #: free space for lifecycle plugins
    extras: dict[str, Any] = field(default_factory=dict)
