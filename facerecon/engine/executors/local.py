"""The ``local`` executor: variants in this process, or in spawned worker processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Generator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed

from facerecon.core.context import Variant, VariantOutcome
from facerecon.engine.executors import prepare_worker
from facerecon.engine.variants import run_variant


class LocalExecutor:
    """``workers`` == 1 runs in this process; more spawn that many worker processes."""

    def __init__(self, workers: int, cpus: float) -> None:
        self.workers, self.cpus = workers, cpus
        self.description = (
            "local, this process" if workers == 1 else f"local, {workers} worker processes"
        )

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def run(
        self, variants: list[Variant], parent_run_id: str | None
    ) -> Generator[VariantOutcome, None, None]:
        """Each variant's outcome as it completes."""
        if self.workers == 1:
            for variant in variants:
                yield run_variant(variant, parent_run_id)
            return
        # spawn, not fork: TensorFlow's threads do not survive a fork.
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            self.workers, mp_context=spawn, initializer=prepare_worker, initargs=(self.cpus,)
        ) as pool:
            futures: dict[Future, Variant] = {
                pool.submit(run_variant, v, parent_run_id): v for v in variants
            }
            try:
                for future in as_completed(futures):
                    try:
                        outcome = future.result()
                    except Exception as exc:  # the worker process itself died
                        error = f"{type(exc).__name__}: {exc}"
                        outcome = VariantOutcome(futures[future].name, "FAILED", error=error)
                    yield outcome
            finally:
                pool.shutdown(wait=False, cancel_futures=True)
