"""Writing to tracking runs: metrics and params in MLflow's batch sizes, and experiments
made once however many workers ask. Every write of the host and the built-in plugins goes
through these, so a batch limit or a race is handled in one place.

And runs that nobody will end: a process killed with SIGKILL (or a machine that lost power)
leaves its run RUNNING. Every tracked run carries a heartbeat tag that its process renews
every :data:`HEARTBEAT_SECONDS`; a RUNNING run whose heartbeat is older than
:data:`STALE_SECONDS` is *stale*, and :func:`end_stale` ends such runs KILLED."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from typing import Any

from facerecon.tracking.store import EXPERIMENT_KIND

#: MLflow's limits per ``log_batch`` call
METRICS_PER_BATCH, PARAMS_PER_BATCH = 1000, 100

#: one metric row: key, value, timestamp (ms), step
MetricRow = tuple[str, float, int, int]


def rows(metrics: Mapping[str, float], step: int = 0) -> list[MetricRow]:
    """Metric rows of ``metrics`` at ``step``, stamped now."""
    now = int(time.time() * 1000)
    return [(key, float(value), now, step) for key, value in metrics.items()]


def log_metrics(
    client: Any, run_id: str, metrics: Iterable[MetricRow], tags: Mapping[str, str] | None = None
) -> None:
    """Metric rows (and ``tags``, with the first batch) in batches MLflow accepts."""
    from mlflow.entities import Metric, RunTag

    batch = [Metric(*row) for row in metrics]
    tag_list = [RunTag(k, v) for k, v in (tags or {}).items()]
    for i in range(0, max(len(batch), 1), METRICS_PER_BATCH):
        chunk = batch[i : i + METRICS_PER_BATCH]
        if chunk or tag_list:
            client.log_batch(run_id, metrics=chunk, tags=tag_list if i == 0 else [])


def log_params(client: Any, run_id: str, params: Mapping[str, str]) -> None:
    """Params in batches MLflow accepts."""
    from mlflow.entities import Param

    batch = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(batch), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=batch[i : i + PARAMS_PER_BATCH])


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment ``name``, made if it does not exist;
    another worker making it at the same moment is no error."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, tags=EXPERIMENT_KIND)
    except MlflowException:
        return client.get_experiment_by_name(name).experiment_id


#: the tag a tracked run's process renews while it lives: seconds since the epoch
HEARTBEAT_TAG = "facerecon.heartbeat"
#: how often the heartbeat is renewed (one tag write; never on the solver's loop)
HEARTBEAT_SECONDS = 60.0
#: a RUNNING run whose heartbeat is older than this is stale (ten missed beats)
STALE_SECONDS = 600.0


def heartbeat_now() -> dict[str, str]:
    """The heartbeat tag, stamped now (for a run's first tags)."""
    return {HEARTBEAT_TAG: str(int(time.time()))}


class Heartbeat:
    """Calls ``beat()`` every ``seconds`` on a daemon thread until :meth:`stop`; a failed
    beat is skipped (a heartbeat never fails a run)."""

    def __init__(self, beat: Callable[[], Any], seconds: float) -> None:
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(beat, seconds), name="facerecon-heartbeat", daemon=True
        )
        self._thread.start()

    def _loop(self, beat: Callable[[], Any], seconds: float) -> None:
        while not self._stopped.wait(seconds):
            with suppress(Exception):
                beat()

    def stop(self) -> None:
        """No beat after this returns (one already under way may still land)."""
        self._stopped.set()


def last_sign_of_life(run: Any) -> float:
    """When ``run`` was last known alive (seconds since the epoch): its heartbeat, else
    (runs made before the heartbeat, or by other tools) its start."""
    with suppress(KeyError, ValueError):
        return float(run.data.tags[HEARTBEAT_TAG])
    return run.info.start_time / 1000


def is_stale(run: Any, bound: float | None = None, now: float | None = None) -> bool:
    """Whether ``run`` is RUNNING with no sign of life for more than ``bound`` seconds
    (default :data:`STALE_SECONDS`)."""
    bound = STALE_SECONDS if bound is None else bound
    now = time.time() if now is None else now
    return run.info.status == "RUNNING" and now - last_sign_of_life(run) > bound


def status(run: Any, bound: float | None = None) -> str:
    """The run's status as reports show it: MLflow's, or ``stale`` (see :func:`is_stale`)."""
    return "stale" if is_stale(run, bound) else run.info.status


def running(client: Any, experiment_ids: list[str]) -> list[Any]:
    """Every RUNNING run of the experiments, oldest first."""
    found, token = [], None
    while True:  # paged: a store may hold more than one page of them
        page = client.search_runs(
            experiment_ids,
            "attributes.status = 'RUNNING'",
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        found += page
        if not (token := page.token):
            return found


def ago(seconds: float) -> str:
    """A duration as people say it: ``40 s``, ``12 min``, ``3.5 h``, ``2.0 days``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{seconds / 86400:.1f} days"


def end_stale(client: Any, stale: Iterable[Any], bound: float) -> list[str]:
    """End each stale run KILLED, with the reason in ``facerecon.error``; their ids."""
    ended = []
    for run in stale:
        quiet = time.time() - last_sign_of_life(run)
        client.set_tag(
            run.info.run_id,
            "facerecon.error",
            f"stale: no sign of life for {ago(quiet)} (more than {ago(bound)}): its process "
            "is gone; ended by `facerecon runs --end-stale`",
        )
        client.set_terminated(run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
    return ended
