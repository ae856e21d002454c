"""``mlflow-tracking``: every run's spec, params, metrics and images, in MLflow.

Logging happens on one background thread so the solver loop never waits for the store.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

import facerecon
from facerecon import hookimpl
from facerecon.context import RunContext, StepInfo
from facerecon.panels import grid, labelled_grid
from facerecon.tracking import flatten, git_commit, tracking_uri


@dataclass
class _Run:
    client: object
    run_id: str
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))
    pending: list[Future] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)
    last_images: StepInfo | None = None
    buffer: list = field(default_factory=list)

    def submit(self, fn, *args, **kwargs) -> None:
        self.pending.append(self.pool.submit(fn, *args, **kwargs))

    def flush(self) -> None:
        """Queue the buffered metrics as few store writes (MLflow takes 1000 per batch)."""
        buffer, self.buffer = self.buffer, []
        for i in range(0, len(buffer), 1000):
            self.submit(self.client.log_batch, self.run_id, metrics=buffer[i : i + 1000])

    def drain(self) -> None:
        """Write what is buffered, wait for every queued write; re-raise the first failure."""
        self.flush()
        pending, self.pending = self.pending, []
        for future in pending:
            future.result()
        self.pool.shutdown(wait=True)


def _state(context: RunContext) -> _Run | None:
    return context.extras.get("_mlflow")


def _metrics(context: RunContext, terms: dict[str, np.ndarray]) -> dict[str, float]:
    """Batch means under plain keys; per-element values under ``key/label`` when B > 1."""
    out = {
        f"loss/{k}" if k not in ("distance", "cosine") else k: float(np.mean(v))
        for k, v in terms.items()
    }
    if len(context.elements) > 1:
        for k, values in terms.items():
            for element, value in zip(context.elements, values, strict=True):
                out[f"{k}/{element.label}"] = float(value)
    return out


def _client():
    import logging

    import mlflow

    # "Creating initial MLflow database tables" is MLflow's business, not the user's.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    return mlflow.MlflowClient(tracking_uri())


def _experiment_id(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # another worker created it first
        return client.get_experiment_by_name(name).experiment_id


@hookimpl
def before_run(context: RunContext) -> None:
    tracking = context.spec.tracking
    if not tracking.enabled:
        return
    client = _client()
    experiment = client.get_experiment_by_name(tracking.experiment)
    exp_id = (
        experiment.experiment_id if experiment else client.create_experiment(tracking.experiment)
    )
    spec = context.spec
    tags = {
        "facerecon.model": spec.model.name,
        "facerecon.solver": spec.solver.name,
        "facerecon.metric": spec.loss.metric.name,
        "facerecon.regularizers": ",".join(context.labels) or "none",
        "facerecon.seed": str(spec.seed),
        "facerecon.version": facerecon.__version__,
        "facerecon.spec": spec.name,
    }
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = commit
    if tracking.parent_run_id:
        tags["mlflow.parentRunId"] = tracking.parent_run_id
    run = client.create_run(exp_id, run_name=tracking.run_name or spec.name, tags=tags)
    state = _Run(client, run.info.run_id)
    context.extras["_mlflow"] = state
    context.extras["mlflow_run_id"] = run.info.run_id
    resolved = spec.resolved()
    client.log_dict(run.info.run_id, resolved, "spec.yaml")
    params = flatten(resolved)
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i : i + 100])


@hookimpl
def after_step(context: RunContext, step: StepInfo) -> None:
    state = _state(context)
    if state is None:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = _metrics(context, step.terms)
    for key in ("loss/total", "distance", "cosine"):
        state.history.setdefault(key, []).append(metrics[key])
    for label, weight in step.weights.items():
        metrics[f"weight/{label}"] = weight
    metrics.update(step.metrics)
    state.buffer += [Metric(k, v, now, step.step) for k, v in metrics.items()]
    state.last_images = step
    if step.step % context.spec.tracking.image_every == 0:
        state.flush()  # the UI shows metrics up to the newest image
        _log_step_image(state, context, step.images_numpy(), step.step)
    elif len(state.buffer) >= 1000:
        state.flush()


def _log_step_image(state: _Run, context: RunContext, images: np.ndarray, step: int) -> None:
    picture = grid([list(images)], context.model.input_size)
    state.submit(state.client.log_image, state.run_id, picture, key="reconstruction", step=step)


def _loss_figure(history: dict[str, list[float]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, (key, values) in zip(axes, history.items(), strict=False):
        ax.plot(values)
        ax.set_title(key)
        ax.set_xlabel("step")
        if key == "loss/total" and min(values) > 0:
            ax.set_yscale("log")
    fig.tight_layout()
    return fig


@hookimpl
def after_run(context: RunContext) -> None:
    state = _state(context)
    if state is None:
        return
    result = context.result
    client, run_id = state.client, state.run_id
    if result.steps - 1 not in range(0, result.steps, context.spec.tracking.image_every):
        _log_step_image(state, context, result.images, result.steps - 1)
    state.drain()
    size = context.model.input_size
    rows = []
    for target, index in enumerate(result.best):
        guide = context.elements[index].guide
        rows.append(
            [
                context.target_images[target],
                None if guide is None else context.guide_images[guide],
                result.images[index],
            ]
        )
    client.log_image(run_id, grid(rows, size), artifact_file="final.png")
    if len(result.images) > len(result.best):
        client.log_image(
            run_id, grid([[im] for im in result.images], size), artifact_file="candidates.png"
        )
    table = {
        "candidate": [e.label for e in context.elements],
        **{k: [float(x) for x in v] for k, v in result.terms.items()},
        "kept": [i in result.best for i in range(len(context.elements))],
    }
    client.log_table(run_id, table, artifact_file="candidates.json")
    for target, index in enumerate(result.best):  # for reports: the kept image alone
        client.log_image(
            run_id,
            grid([[result.images[index]]], size, gap=0),
            artifact_file=f"kept/target_{target}.png",
        )
    import matplotlib.pyplot as plt

    fig = _loss_figure(state.history)
    client.log_figure(run_id, fig, "plots/loss.png")
    plt.close(fig)
    best = result.best
    client.set_tag(run_id, "facerecon.stop_reason", result.stop_reason)
    for key in ("distance", "cosine"):
        client.log_metric(run_id, f"final/{key}", float(np.mean(result.terms[key][best])))
    client.set_terminated(run_id, "FINISHED")


@hookimpl
def on_error(context: RunContext, error: BaseException) -> None:
    state = _state(context)
    if state is None:
        return
    client, run_id = state.client, state.run_id
    try:
        state.drain()
        if state.last_images is not None:  # keep what the run made so far
            images = state.last_images.images_numpy()
            client.log_image(
                run_id, grid([list(images)], context.model.input_size), artifact_file="last.png"
            )
    finally:
        reason = f"{type(error).__name__}: {error}"[:5000]
        client.set_tag(run_id, "facerecon.error", reason)
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        client.set_terminated(run_id, status)


@hookimpl
def before_sweep(sweep) -> None:
    tracking = sweep.spec.tracking
    if not tracking.enabled:
        return
    client = _client()
    exp_id = _experiment_id(client, tracking.experiment)
    tags = {
        "facerecon.spec": sweep.spec.name,
        "facerecon.sweep": str(len(sweep.variants)),
        "facerecon.version": facerecon.__version__,
    }
    run = client.create_run(exp_id, run_name=f"{sweep.spec.name} (sweep)", tags=tags)
    sweep.extras["mlflow_run_id"] = run.info.run_id
    client.log_dict(run.info.run_id, sweep.spec.resolved(), "spec.yaml")


@hookimpl
def after_sweep(sweep) -> None:
    run_id = sweep.extras.get("mlflow_run_id")
    if run_id is None:
        return
    import matplotlib.pyplot as plt

    client = _client()
    outcomes = sweep.outcomes
    try:
        if outcomes:
            table = {
                "variant": [o.name for o in outcomes],
                "status": [o.status for o in outcomes],
                "run_id": [o.run_id or "" for o in outcomes],
                "distance": [o.distance for o in outcomes],
                "cosine": [o.cosine for o in outcomes],
                "error": [o.error or "" for o in outcomes],
            }
            client.log_table(run_id, table, artifact_file="summary.json")
            fig = labelled_grid(
                [(o.name, o.images or o.status) for o in outcomes],
                [f"target {t}" for t in range(max(len(o.images) for o in outcomes))],
            )
            client.log_figure(run_id, fig, "contact_sheet.png")
            plt.close(fig)
        failed = [o.name for o in outcomes if o.status != "FINISHED"]
        client.set_tag(run_id, "facerecon.failed_variants", "; ".join(failed) or "none")
    finally:
        if sweep.error is not None:
            client.set_tag(
                run_id, "facerecon.error", f"{type(sweep.error).__name__}: {sweep.error}"[:5000]
            )
            status = "KILLED" if isinstance(sweep.error, KeyboardInterrupt) else "FAILED"
        else:
            status = "FINISHED"
        client.set_terminated(run_id, status)
