"""`facerecon report`: an experiment's runs as one labelled figure and one table."""

from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from facerecon import api
from facerecon.cli import main
from facerecon.core.errors import FaceReconError
from facerecon.engine.validation import validate

SPEC = {
    "name": "rep",
    "model": {"name": "tiny"},
    "targets": [{"image": "builtin:astronaut"}, {"image": "builtin:grace-hopper"}],
    "loss": {"regularizers": [{"name": "tv", "weight": 0.01}]},
    "solver": {"name": "adam", "steps": 3},
    "tracking": {"experiment": "reported", "image_every": 2},
    "sweep": {"grid": {"seed": [0, 1, 2]}},
}


def test_report_gathers_every_run_with_its_numbers(store, tmp_path):
    sweep = api.sweep(validate(SPEC))
    made = api.report("reported", tmp_path / "out")
    assert (tmp_path / "out" / "figure.png").stat().st_size > 0
    assert (tmp_path / "out" / "distance.png").stat().st_size > 0
    with open(tmp_path / "out" / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == [f"rep [seed={s}]" for s in range(3)]
    client = MlflowClient(store)
    for row, outcome in zip(rows, sweep.outcomes, strict=True):
        metrics = client.get_run(row["run_id"]).data.metrics
        assert float(row["distance"]) == pytest.approx(metrics["final/distance"], abs=1e-4)
        assert float(row["distance"]) == pytest.approx(outcome.distance, abs=1e-4)
    report_run = client.get_run(made.run_id)
    assert report_run.data.tags["facerecon.report"] == "true"
    assert {"report.png", "distance.png", "report.json"} <= {
        a.path for a in client.list_artifacts(made.run_id)
    }
    # a second report leaves out the first report and the sweep's parent run
    again = api.report("reported", tmp_path / "again", log=False)
    assert len(again.rows) == 3 and again.run_id is None


def test_report_of_an_unknown_experiment(store):
    api.run(validate({**SPEC, "sweep": None, "tracking": {"experiment": "reported"}}))
    with pytest.raises(
        FaceReconError,
        match=r"experiment 'reportd' not found .*did you mean "
        r"'reported'",
    ):
        api.report("reportd")
    result = CliRunner().invoke(main, ["report", "nope"])
    assert result.exit_code == 1 and "experiment 'nope' not found" in result.output
