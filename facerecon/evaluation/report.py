"""Reports: an experiment's runs gathered into one labelled figure and one table."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage.io

from facerecon import __version__
from facerecon.core.errors import FaceReconError, did_you_mean
from facerecon.evaluation.attack_report import tables
from facerecon.evaluation.tables import markdown
from facerecon.faces.panels import labelled_grid
from facerecon.tracking import runs as tracking_runs
from facerecon.tracking.store import client as tracking_client
from facerecon.tracking.store import tracking_uri

COLUMNS = ("run", "status", "distance", "cosine", "total loss", "run_id")
# The judges' means over targets (judge/<model>/<score>); per-target values and the
# pass flags stay in MLflow.
JUDGE_SCORES = ("type1", "type2_mean", "face")


def _judge_columns(runs) -> list[str]:
    keys = {
        key
        for run in runs
        for key in run.data.metrics
        if key.startswith("judge/") and key.count("/") == 2 and key.endswith(JUDGE_SCORES)
    }
    return sorted(keys)


def _seconds(run) -> str:
    info = run.info
    return f"{(info.end_time - info.start_time) / 1000:.1f}" if info.end_time else ""


@dataclass
class Report:
    """Where a report was written and what it holds."""

    folder: Path
    rows: list[dict[str, str]]
    run_id: str | None


def _kept_images(client, run_id: str) -> list[np.ndarray]:
    files = sorted(a.path for a in client.list_artifacts(run_id, "kept"))
    files.sort(key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))
    return [skimage.io.imread(client.download_artifacts(run_id, f)) / 255.0 for f in files]


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


#: per target, what each judge says (key in a judge's scores -> column suffix)
TARGET_SCORES = {
    "type1": "I",
    "type1_rank": "I rank",
    "type2_mean": "II",
    "type2_rank": "II rank",
    "face": "face",
}


def _per_target(client, run) -> list[dict[str, str]]:
    """One row per kept reconstruction of a run: the dlib distance and every judge's
    scores, read from the run's ``candidates.json``."""
    try:
        path = client.download_artifacts(run.info.run_id, "candidates.json")
    except Exception:  # a run that failed before its table was written
        return []
    table = json.loads(Path(path).read_text())
    columns = {name: [row[i] for row in table["data"]] for i, name in enumerate(table["columns"])}
    kept = [i for i, k in enumerate(columns["kept"]) if k]
    rows = []
    for target, i in enumerate(kept):
        row = {"run": run.info.run_name or run.info.run_id, "target": str(target)}
        row["distance"] = _fmt(columns["distance"][i])
        for judge, scores in json.loads(columns.get("judges", ["{}"] * (i + 1))[i]).items():
            for key, label in TARGET_SCORES.items():
                if key in scores:
                    value = scores[key]
                    shown = str(value) if isinstance(value, bool | int) else f"{value:.3f}"
                    row[f"{judge} {label}"] = shown
        rows.append(row)
    return rows


def _write_table(out: Path, stem: str, columns: list[str], rows: list[dict[str, str]]) -> None:
    """``<stem>.csv`` and ``<stem>.md`` in ``out``."""
    with open(out / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    lines = markdown(columns, ([row.get(c, "") for c in columns] for row in rows))
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


def report(experiment: str, folder: str | Path | None = None, *, log: bool = True) -> Report:
    """Gather every run of ``experiment`` (sweep parents and earlier reports excluded) into
    ``figure.png``, ``table.csv`` and ``table.md`` (``targets.csv``/``.md``: one row per
    target and run, with the judges' scores) in ``folder`` (default
    ``reports/<experiment>``), and log them as a ``report`` run of the experiment. A
    RUNNING run whose process has stopped beating is shown as ``stale``."""
    import matplotlib.pyplot as plt

    client = tracking_client()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        hint = did_you_mean(experiment, names, cutoff=0.5)
        raise FaceReconError(
            f"experiment {experiment!r} not found in {tracking_uri()}; "
            f"experiments: {', '.join(sorted(names)) or 'none'}{hint}"
        )
    runs = [
        r
        for r in client.search_runs(
            [found.experiment_id], order_by=["start_time ASC"], max_results=1000
        )
        if "facerecon.sweep" not in r.data.tags and "facerecon.report" not in r.data.tags
    ]
    if not runs:
        raise FaceReconError(f"experiment {experiment!r} has no runs to report")
    judged = _judge_columns(runs)
    columns = [*COLUMNS[:5], *judged, "seconds", COLUMNS[5]]
    rows, panels = [], []
    for run in runs:
        metrics = run.data.metrics
        name = run.info.run_name or run.info.run_id
        status = tracking_runs.status(run)
        images = _kept_images(client, run.info.run_id) if status == "FINISHED" else []
        panels.append((name, images or status))
        rows.append(
            {
                "run": name,
                "status": status,
                "distance": _fmt(metrics.get("final/distance")),
                "cosine": _fmt(metrics.get("final/cosine")),
                "total loss": _fmt(metrics.get("loss/total")),
                **{key: _fmt(metrics.get(key)) for key in judged},
                "seconds": _seconds(run),
                "run_id": run.info.run_id,
            }
        )
    targets = (
        max(len(p[1]) for p in panels if not isinstance(p[1], str))
        if any(not isinstance(p[1], str) for p in panels)
        else 1
    )
    fig = labelled_grid(panels, [f"target {t}" for t in range(targets)])
    curves = _distance_curves(client, runs)
    out = Path(folder) if folder else Path("reports") / experiment
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "figure.png", dpi=100)
    curves.savefig(out / "distance.png", dpi=100)
    _write_table(out, "table", columns, rows)
    targets = [row for run in runs for row in _per_target(client, run)]
    target_columns = list(dict.fromkeys(c for row in targets for c in row))
    if targets:
        _write_table(out, "targets", target_columns, targets)
    _attack_tables(client, found.experiment_id, out)
    run_id = None
    if log:
        run = client.create_run(
            found.experiment_id,
            run_name=f"{experiment} report",
            tags={"facerecon.report": "true", "facerecon.version": __version__},
        )
        run_id = run.info.run_id
        client.log_figure(run_id, fig, "report.png")
        client.log_figure(run_id, curves, "distance.png")
        client.log_table(
            run_id, {c: [row[c] for row in rows] for c in columns}, artifact_file="report.json"
        )
        if targets:
            client.log_artifact(run_id, str(out / "targets.csv"))
        client.set_terminated(run_id, "FINISHED")
    plt.close(fig)
    plt.close(curves)
    return Report(out, rows, run_id)


def _attack_tables(client, experiment_id: str, out: Path) -> None:
    """``attack-<run>.md``: the tables of each attack evaluation of the experiment."""
    attacks = client.search_runs([experiment_id], "tags.`facerecon.kind` = 'attack'")
    for run in attacks:
        if not any(a.path == "attack.json" for a in client.list_artifacts(run.info.run_id)):
            continue  # interrupted before its report
        data = json.loads(
            Path(client.download_artifacts(run.info.run_id, "attack.json")).read_text()
        )
        (out / f"attack-{run.info.run_id[:8]}.md").write_text(tables(data))


def _distance_curves(client, runs):
    """Embedding distance against step, one line per run (the paper's Fig. 7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "distance")
        if history:
            ax.plot(
                [m.step for m in history],
                [m.value for m in history],
                label=run.info.run_name or run.info.run_id,
            )
    ax.set_xlabel("step")
    ax.set_ylabel("embedding distance (mean over the batch)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
