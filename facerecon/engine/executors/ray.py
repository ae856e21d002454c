"""The ``ray`` executor: one Ray task per variant, on a cluster or a local Ray runtime.

Each task declares the CPUs/GPUs of the spec's ``sweep.resources``. Ray reuses a worker
process for the next task of the same shape, so the model a worker built stays cached
(``max_calls=0`` keeps that true for GPU tasks too). Tasks are not retried: a variant
that dies is reported FAILED, never silently run twice into two MLflow runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from typing import Any

from facerecon.core.context import Variant, VariantOutcome
from facerecon.core.errors import FaceReconError
from facerecon.engine.executors import prepare_worker
from facerecon.engine.variants import run_variant
from facerecon.tracking.store import absolute_uri, tracking_uri

#: how long cancelled tasks get to end their MLflow runs before they are killed
CANCEL_GRACE_S = 30.0
#: how long the store check on a worker may take (a worker starts, imports mlflow, asks)
PROBE_TIMEOUT_S = 120.0


def _variant_task(
    variant: Variant, parent_run_id: str | None, cpus: float, store: str | None
) -> VariantOutcome:
    prepare_worker(cpus)
    if store is not None:  # each task says where to log: a worker outlives one sweep
        os.environ["MLFLOW_TRACKING_URI"] = store
    return run_variant(variant, parent_run_id)


def _probe_store(store: str, experiment: str) -> None:
    """On a worker: the pre-run check of the store, with the worker's own credentials."""
    from facerecon.tracking.store import check_store

    check_store(store, experiment)


def _reason(exc: BaseException) -> str:
    """The root cause in one line, and what to do about the usual one."""
    chain = [exc]
    while (chain[-1].__cause__ or chain[-1].__context__) and len(chain) < 20:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    lines = str(chain[-1]).strip().splitlines() or [type(chain[-1]).__name__]
    text = lines[0].split(" Last connection error")[0].split(". Note:")[0]
    if any("InvalidAuthToken" in str(e) for e in chain):
        text += (
            " The cluster uses token authentication: set RAY_AUTH_MODE=token here and give"
            " this machine the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN)."
        )
    return text


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise FaceReconError(
            "--executor ray: Ray is not installed; install it with pip install 'facerecon[ray]'"
        ) from None
    return ray


class RayExecutor:
    """Variants as Ray tasks on the cluster at ``address``, or on a Ray runtime started here
    (all local cores) when none is running and no address is given."""

    def __init__(
        self, address: str | None, cpus: float, gpus: float, experiment: str | None
    ) -> None:
        """``experiment``: the one the variants log to; None when they are not tracked."""
        self.address, self.cpus, self.gpus = address, cpus, gpus
        self.experiment = experiment
        self._started = False
        #: this process's environment before Ray started here (ray.init leaves variables
        #: such as RAY_AUTH_MODE behind, which every later child process would inherit)
        self._environ: dict[str, str] | None = None
        where = f"at {address}" if address else "local runtime"
        need = f"{cpus:g} CPU" + (f", {gpus:g} GPU" if gpus else "")
        self.description = f"ray ({where}), {need} per variant"

    def _connect(self, ray: Any) -> bool:
        """Join or start Ray; True when this call started it (and must shut it down)."""
        if ray.is_initialized():
            return False
        env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
        self._environ = dict(os.environ)
        try:
            ray.init(
                address=self.address,
                runtime_env={"env_vars": env},
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        except (ConnectionError, ValueError, RuntimeError) as exc:
            self._restore_environ()
            where = self.address or "a local Ray runtime"
            raise FaceReconError(
                f"--executor ray: could not start or reach {where}: {_reason(exc)}"
            ) from None
        return True

    def __enter__(self) -> RayExecutor:
        """Join or start Ray and check the store: before any run exists."""
        ray = _ray()
        self._started = self._connect(ray)
        try:
            self._check_store(ray)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._started:
            _ray().shutdown()
            self._started = False
        self._restore_environ()

    def _restore_environ(self) -> None:
        if self._environ is not None:
            os.environ.clear()
            os.environ.update(self._environ)
            self._environ = None

    def _check_store(self, ray: Any) -> None:
        if self.experiment is None:
            return
        uri = tracking_uri()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if len(nodes) > 1 and uri.split(":", 1)[0] in ("sqlite", "file"):
            raise FaceReconError(
                f"MLFLOW_TRACKING_URI={uri}: a local store on a {len(nodes)}-node Ray cluster "
                "would scatter the runs over the nodes' disks; point facerecon at a tracking "
                "server (README, 'Team set-up')"
            )
        if uri.startswith(("http://", "https://")):
            # Workers log with the credentials in their own environment: check them on one
            # before any variant starts, so a refusal is one line, not every variant FAILED.
            probe = ray.remote(num_cpus=self.cpus, max_retries=0)(_probe_store)
            try:
                ray.get(probe.remote(uri, self.experiment), timeout=PROBE_TIMEOUT_S)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(exc.cause, FaceReconError) else exc
                raise FaceReconError(f"on a Ray worker: {_reason(cause)}") from None
            except ray.exceptions.GetTimeoutError:
                raise FaceReconError(
                    f"on a Ray worker: no answer from the store check in {PROBE_TIMEOUT_S:g} s; "
                    f"does the cluster have {self.cpus:g} free CPU?"
                ) from None

    def run(
        self, variants: list[Variant], parent_run_id: str | None
    ) -> Generator[VariantOutcome, None, None]:
        """Submit every variant at once; yield outcomes as tasks complete."""
        ray = _ray()
        task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0, max_calls=0)(
            _variant_task
        )
        # Workers write to the same store as this process, wherever they start.
        store = absolute_uri(tracking_uri()) if self.experiment is not None else None
        refs = {}
        for variant in variants:
            # Paths in the spec resolve on the worker, which may start elsewhere.
            spec = variant.spec.model_copy(update={"base_dir": variant.spec.base_dir.resolve()})
            shipped = Variant(variant.name, variant.overrides, spec)
            refs[task.remote(shipped, parent_run_id, self.cpus, store)] = variant
        pending = list(refs)
        try:
            while pending:
                # A short timeout keeps Ctrl-C responsive while waiting.
                done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                for ref in done:
                    yield self._outcome(ray, ref, refs[ref])
        finally:
            if pending:
                self._cancel(ray, pending)

    @staticmethod
    def _outcome(ray: Any, ref: Any, variant: Variant) -> VariantOutcome:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:  # the worker died, ran out of memory, ...
            first = (str(exc).strip().splitlines() or [""])[0]
            return VariantOutcome(variant.name, "FAILED", error=f"{type(exc).__name__}: {first}")

    @staticmethod
    def _cancel(ray: Any, pending: list[Any]) -> None:
        """Queued tasks are dropped; running ones get KeyboardInterrupt, which ends their
        runs KILLED; whatever has not stopped after a grace period is killed outright."""
        for ref in pending:
            ray.cancel(ref)
        _, stuck = ray.wait(pending, num_returns=len(pending), timeout=CANCEL_GRACE_S)
        for ref in stuck:
            ray.cancel(ref, force=True)
