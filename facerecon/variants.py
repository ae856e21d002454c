"""A sweep's variants, their outcomes, and running one variant (in any process)."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facerecon.spec import Spec


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
    #: the judges' scores, mean over targets (``judge/<model>/<score>``: facerecon.judging)
    judges: dict[str, float] = field(default_factory=dict)
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
    extras: dict[str, Any] = field(default_factory=dict)


def run_variant(variant: Variant, parent_run_id: str | None) -> VariantOutcome:
    """Run one variant (in this process or a worker) and summarize it; never raises on a
    failed run, so one variant's failure leaves the others alone."""
    from facerecon.runner import models_built, run

    spec = variant.spec
    spec = spec.model_copy(
        update={"tracking": spec.tracking.model_copy(update={"parent_run_id": parent_run_id})}
    )
    built, started = models_built(), time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def outcome(status: str, **fields: Any) -> VariantOutcome:
        return VariantOutcome(
            variant.name,
            status,
            seconds=time.perf_counter() - started,
            worker=worker,
            built_model=models_built() > built,
            **fields,
        )

    try:
        result = run(spec)
    except Exception as exc:
        return outcome("FAILED", error=f"{type(exc).__name__}: {exc}")
    from facerecon.judging import flat

    best = result.best
    flats = [flat(scores) for scores in result.judges]
    keys = dict.fromkeys(k for f in flats for k in f)
    return outcome(
        "FINISHED",
        judges={k: float(np.mean([f[k] for f in flats if k in f])) for k in keys},
        run_id=result.run_id,
        distance=float(np.mean(result.terms["distance"][best])),
        cosine=float(np.mean(result.terms["cosine"][best])),
        images=[result.images[i] for i in best],
    )
