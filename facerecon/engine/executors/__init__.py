"""Where a sweep's variants run: ``local`` (this process or spawned worker processes) or
``ray`` (one Ray task per variant). Both build a model once per worker and reuse it."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import TYPE_CHECKING, Protocol

from facerecon.core.errors import FaceReconError, did_you_mean

if TYPE_CHECKING:
    from facerecon.core.context import Variant, VariantOutcome
    from facerecon.core.spec import Spec

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """Runs variants; yields each outcome as it completes (in completion order).

    Entering it connects to whatever it runs on (so an unreachable cluster stops the sweep
    before any run exists); leaving it releases that. Closing ``run``'s generator early (an
    exception in the consumer, Ctrl-C) cancels every variant that has not completed; a
    running one ends its run KILLED where it can.
    """

    description: str

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def run(
        self, variants: list[Variant], parent_run_id: str | None
    ) -> Generator[VariantOutcome, None, None]: ...


def executor_for(name: str, *, workers: int | None, address: str | None, spec: Spec) -> Executor:
    """The executor called ``name``. ``workers`` (None: the spec's ``sweep.workers``) is for
    local processes; ``address`` names a Ray cluster."""
    from facerecon.core.spec import ResourcesSpec, SweepSpec

    # a spec without a sweep section (an attack evaluation's) runs on the defaults
    sweep = spec.sweep or SweepSpec.model_construct(workers=1, resources=ResourcesSpec())
    resources = sweep.resources
    if name == "local":
        if address is not None:
            raise FaceReconError("--address: only the `ray` executor connects to a cluster")
        from facerecon.engine.executors.local import LocalExecutor

        return LocalExecutor(workers or sweep.workers, resources.cpus)
    if name == "ray":
        if workers is not None:
            raise FaceReconError(
                f"--workers {workers}: Ray runs as many variants at once as the cluster has "
                "room for (`sweep.resources` per variant); drop --workers or use the local "
                "executor"
            )
        from facerecon.engine.executors.ray import RayExecutor

        experiment = spec.tracking.experiment if spec.tracking.enabled else None
        return RayExecutor(address, resources.cpus, resources.gpus, experiment)
    hint = did_you_mean(name, EXECUTORS, n=1)
    raise FaceReconError(f"executor {name!r}: choose one of {', '.join(EXECUTORS)}{hint}")


def prepare_worker(cpus: float) -> None:
    """Once per worker process: quiet TensorFlow, and give it as many threads as the cores
    the variant was granted (two workers on two cores must not each spin up two pools)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    threads = max(1, round(cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already started in this worker: its pools stay
        pass
