"""Running one sweep variant, in this process or a worker, and summarizing its outcome."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import numpy as np

from facerecon.core.context import Variant, VariantOutcome


def run_variant(variant: Variant, parent_run_id: str | None) -> VariantOutcome:
    """Run one variant (in this process or a worker) and summarize it; never raises on a
    failed run, so one variant's failure leaves the others alone."""
    # here, not at the top: the executors import this module, and expanding or validating a
    # sweep must not import TensorFlow
    from facerecon.engine.runner import models_built, run

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
    from facerecon.judges.scoring import means  # TensorFlow too, as above

    best = result.best
    return outcome(
        "FINISHED",
        judges=means(result.judges),
        scores=result.judges,
        run_id=result.run_id,
        distance=float(np.mean(result.terms["distance"][best])),
        cosine=float(np.mean(result.terms["cosine"][best])),
        images=[result.images[i] for i in best],
    )
