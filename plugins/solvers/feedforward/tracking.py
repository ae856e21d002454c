"""The MLflow side of feed-forward reconstruction, kept out of the solver.

A lifecycle hook logs a trained generator into its run (an MLflow Keras model under
``generator/``) and, with several guides such as a clip's frames, each target carried over
the whole sequence as an animated GIF (paper, Fig. 11). Per-step losses and probe images go
through the ``mlflow-tracking`` plugin like any solver's. :func:`log_evaluation` records an
evaluation (Table 1, Fig. 10) as its own run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facerecon import hookimpl
from facerecon.core.context import RunContext
from facerecon.faces.panels import grid
from facerecon.tracking import runs
from facerecon.tracking import store as tracking
from facerecon.tracking.store import tracking_uri

from . import store

if TYPE_CHECKING:
    from .evaluation import Evaluation


def sequences(context: RunContext) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """Per target, (guide, reconstruction) over every guide in order (first restart)."""
    out: dict[int, list] = {}
    for i, element in enumerate(context.elements):
        if element.guide is not None and element.restart == 0:
            pair = (context.guide_images[element.guide], context.result.images[i])
            out.setdefault(element.target, []).append(pair)
    return out


def write_gif(frames: list[np.ndarray], path: Path, ms_per_frame: int = 100) -> Path:
    """An endlessly looping animated GIF of uint8 RGB frames."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return path


# tryfirst: log before mlflow-tracking's after_run marks the run finished.
@hookimpl(tryfirst=True)
def after_run(context: RunContext) -> None:
    run_id = context.run_id
    generator = context.result.extras.get("generator") if context.result else None
    if run_id is None or generator is None:
        return
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    client.set_tag(run_id, "facerecon.generator", generator.config.describe())
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifacts(run_id, str(store.save(generator, Path(tmp, "model"))), "generator")
        if len(context.guide_images) > 1 and context.spec.tracking.images == "all":
            size = context.model.input_size
            for target, pairs in sequences(context).items():
                frames = [grid([[guide, image]], size) for guide, image in pairs]
                gif = write_gif(frames, Path(tmp, f"target{target}.gif"))
                client.log_artifact(run_id, str(gif), "transfer")


def _scatter(evaluation: Evaluation):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    iterative = evaluation.iterative.terms["total"]
    top = float(np.max(iterative))
    for scores in evaluation.generators:
        ratio = evaluation.ratio(scores)
        ax.scatter(iterative, scores.terms["total"], s=14, label=f"{scores.label} (x{ratio:.2f})")
        top = max(top, float(np.max(scores.terms["total"])))
    ax.plot([0, top], [0, top], color="gray", lw=1, ls="--")
    ax.set_xlabel("iterative loss")
    ax.set_ylabel("feed-forward loss")
    ax.set_title("Fig. 10: per embedding (mean ratio in legend)")
    ax.legend()
    fig.tight_layout()
    return fig


def log_evaluation(evaluation: Evaluation, experiment: str, run_name: str) -> str:
    """One MLflow run with the evaluation's table, summary, scatter and images; its id."""
    import matplotlib.pyplot as plt

    client = tracking.client()
    exp_id = runs.experiment_id(client, experiment)
    tags = {"facerecon.kind": "evaluation", "facerecon.spec": evaluation.spec.name}
    if evaluation.iterative_run_id:
        tags["facerecon.iterative_run"] = evaluation.iterative_run_id
    run_id = client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
    try:
        for scores in evaluation.generators:
            client.log_param(run_id, f"generator.{scores.label}", scores.source)
        client.log_param(run_id, "threshold", evaluation.threshold)
        client.log_dict(run_id, evaluation.spec.resolved(), "spec.yaml")
        metrics = {
            f"{row['method']}/{key}": value
            for row in evaluation.summary()
            for key, value in row.items()
            if isinstance(value, float) and np.isfinite(value)
        }
        runs.log_metrics(client, run_id, runs.rows(metrics))
        client.log_table(run_id, evaluation.table(), artifact_file="evaluation.json")
        client.log_table(run_id, evaluation.summary_columns(), artifact_file="summary.json")
        if evaluation.iterative is not None and evaluation.generators:
            fig = _scatter(evaluation)
            client.log_figure(run_id, fig, "fig10_scatter.png")
            plt.close(fig)
        if evaluation.spec.tracking.images != "none":
            rows = [
                [evaluation.target_images[t]] + [s.images[t] for s in evaluation.methods()]
                for t in range(len(evaluation.target_images))
            ]
            client.log_image(run_id, grid(rows, evaluation.size), "reconstructions.png")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
