"""Sweeps: expansion and its errors, child runs under a parent, failures, parallel workers."""

from __future__ import annotations

import os

import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from facerecon import api, hookimpl
from facerecon.cli import main
from facerecon.core.errors import FaceReconError
from facerecon.core.registry import failures, plugin_manager
from facerecon.engine.sweep import expand
from facerecon.engine.validation import validate

from .entry_points import plugin_site

BASE = {
    "name": "sw",
    "model": {"name": "tiny"},
    "targets": [{"image": "builtin:astronaut"}, {"image": "builtin:lfw/3", "align": False}],
    "loss": {"regularizers": [{"name": "tv", "weight": 0.01}]},
    "solver": {"name": "adam", "steps": 4},
    "tracking": {"experiment": "sweeps", "image_every": 2},
}


def sweep_spec(sweep, **extra):
    return validate({**BASE, **extra, "sweep": sweep})


def test_grid_and_variants_expand_in_order_with_defaults_reachable():
    spec = sweep_spec(
        {
            "grid": {"loss.regularizers[0].weight": [0.0, 0.1], "solver.lr": [0.01, 0.05]},
            "variants": [{"name": "sgd", "set": {"solver": {"name": "sgd", "steps": 4}}}],
        }
    )
    variants = expand(spec)
    assert [v.name for v in variants] == [
        "loss.regularizers[0].weight=0.0, solver.lr=0.01",
        "loss.regularizers[0].weight=0.0, solver.lr=0.05",
        "loss.regularizers[0].weight=0.1, solver.lr=0.01",
        "loss.regularizers[0].weight=0.1, solver.lr=0.05",
        "sgd",
    ]
    assert variants[1].spec.solver.params["lr"] == 0.05  # a default made explicit
    assert variants[2].spec.loss.regularizers[0].weight == 0.1
    assert variants[4].spec.solver.name == "sgd" and variants[4].spec.sweep is None


def test_bad_sweeps_are_refused_before_anything_runs():
    with pytest.raises(
        FaceReconError,
        match=r"variant 0 \(solver.lrr=0.1\): sweep: key path "
        r"'solver.lrr' does not exist in the spec \(did you mean 'solver.lr' or",
    ):
        expand(sweep_spec({"grid": {"solver.lrr": [0.1]}}))
    with pytest.raises(FaceReconError, match=r"sweep: empty grid for solver.lr"):
        sweep_spec({"grid": {"solver.lr": []}})
    with pytest.raises(FaceReconError) as info:
        expand(
            sweep_spec(
                {
                    "variants": [
                        {"name": "ok", "set": {"solver.lr": 0.1}},
                        {"name": "bad", "set": {"solver.lr": -1}},
                    ]
                }
            )
        )
    assert info.value.lines == [
        "variant 1 (bad): solver.lr: Input should be greater than 0 (got -1)"
    ]


def test_duplicate_variant_names_are_refused():
    # Outcomes are keyed by name: a second 'a' used to overwrite the first one's outcome.
    with pytest.raises(FaceReconError) as info:
        expand(
            sweep_spec(
                {
                    "variants": [
                        {"name": "a", "set": {"solver.lr": 0.1}},
                        {"name": "b", "set": {"solver.lr": 0.2}},
                        {"name": "a", "set": {"solver.lr": 0.3}},
                    ]
                }
            )
        )
    assert info.value.lines == [
        "sweep.variants[2].name: variant name 'a' is already used by variant 0; "
        "give every variant its own `name`"
    ]
    with pytest.raises(FaceReconError, match=r"variant 1: variant name 'solver.lr=0.1' is"):
        expand(sweep_spec({"grid": {"solver.lr": [0.1, 0.1]}}))


class Record:
    def __init__(self):
        self.calls = []

    @hookimpl
    def before_sweep(self, sweep):
        self.calls.append("before_sweep")

    @hookimpl
    def after_variant(self, sweep, outcome):
        self.calls.append(f"after_variant:{outcome.status}")

    @hookimpl
    def after_sweep(self, sweep):
        self.calls.append("after_sweep")


def test_only_the_named_variants_run_and_an_unknown_name_is_one_line(store, tmp_path):
    spec_path = tmp_path / "sw.yaml"
    sweep = {"variants": [{"name": n, "set": {"solver.lr": lr}} for n, lr in
                          (("a", 0.01), ("b", 0.02), ("c", 0.03))]}  # fmt: skip
    spec_path.write_text(yaml.safe_dump({**BASE, "sweep": sweep}))
    ctx = api.sweep(spec_path, only=["c", "a"])
    assert [o.name for o in ctx.outcomes] == ["a", "c"]  # the sweep's order, not the call's
    assert [o.status for o in ctx.outcomes] == ["FINISHED", "FINISHED"]
    client = MlflowClient(store)
    children = client.search_runs(
        [client.get_run(ctx.run_id).info.experiment_id],
        f"tags.mlflow.parentRunId = '{ctx.run_id}'",
    )
    assert sorted(r.data.params["solver.lr"] for r in children) == ["0.01", "0.03"]
    result = CliRunner().invoke(main, ["sweep", str(spec_path), "--variant", "bb"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == [
        "error: --variant 'bb': no such variant (variants: a, b, c) (did you mean 'b'?)"
    ]


def test_in_process_sweep_with_a_failing_variant(store, tmp_path):
    record = Record()
    # a file that is there (validation checks that) but is no image: it fails when it runs
    (tmp_path / "broken.png").write_text("not an image")
    plugin_manager().register(record)
    try:
        ctx = api.sweep(
            sweep_spec(
                {
                    "variants": [
                        {"name": "a", "set": {"solver.lr": 0.01}},
                        {"name": "broken", "set": {"targets[1].image": "broken.png"}},
                        {"name": "c", "set": {"solver": {"name": "sgd", "steps": 3}}},
                    ]
                }
            )
        )
    finally:
        plugin_manager().unregister(record)
    assert record.calls == [
        "before_sweep",
        "after_variant:FINISHED",
        "after_variant:FAILED",
        "after_variant:FINISHED",
        "after_sweep",
    ]
    assert [o.status for o in ctx.outcomes] == ["FINISHED", "FAILED", "FINISHED"]
    assert "broken.png: not a readable image" in ctx.outcomes[1].error
    client = MlflowClient(store)
    parent = client.get_run(ctx.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["facerecon.failed_variants"] == "broken"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"contact_sheet.png", "summary.json", "spec.yaml"} <= artifacts
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.info.run_name for r in children) == ["sw [a]", "sw [c]"]


def test_two_parallel_workers_lose_no_run(store, tmp_path, monkeypatch):
    # Worker processes find the tiny model through a real entry point (spawned children
    # inherit sys.path), exactly as they would find a third-party plugin.
    monkeypatch.syspath_prepend(str(plugin_site(tmp_path)))
    plugin_manager.cache_clear()
    try:
        spec = sweep_spec(
            {"grid": {"seed": [0, 1, 2, 3]}, "workers": 2}, solver={"name": "adam", "steps": 6}
        )
        ctx = api.sweep(spec)
    finally:
        monkeypatch.undo()
        plugin_manager.cache_clear()
        failures.clear()
    assert [o.status for o in ctx.outcomes] == ["FINISHED"] * 4, [o.error for o in ctx.outcomes]
    client = MlflowClient(store)
    parent = ctx.run_id
    children = client.search_runs(
        [client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
    for child in children:
        history = client.get_metric_history(child.info.run_id, "loss/total")
        assert [m.step for m in history] == list(range(6))
        assert "final.png" in {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {r.info.run_id for r in children} == {o.run_id for o in ctx.outcomes}


def test_a_runtime_started_here_leaves_no_variables_behind(monkeypatch):
    # ray.init sets RAY_AUTH_MODE and others in this process; every later child process
    # (a worker pool, another Ray runtime) would inherit them
    import ray

    from facerecon.engine.executors.ray import RayExecutor

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    before = dict(os.environ)
    with RayExecutor(None, 1.0, 0.0, None):
        assert ray.is_initialized()
    assert not ray.is_initialized()
    assert dict(os.environ) == before
