"""Writing to tracking runs: metrics and params in MLflow's batch sizes, and experiments
made once however many workers ask. Every write of the host and the built-in plugins goes
through these, so a batch limit or a race is handled in one place."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
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
