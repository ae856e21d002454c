"""Sweeps on a real local Ray runtime (no mocks): child runs under the parent, a failing
variant that does not stop the others, one model per worker, and Ctrl-C.

The test plugins reach Ray's worker processes as an installed distribution on PYTHONPATH,
exactly as a third-party plugin would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import ray
import yaml
from mlflow import MlflowClient

from facerecon import api
from facerecon.core.errors import FaceReconError
from facerecon.engine.validation import validate

from .entry_points import ROOT, plugin_site

BASE = {
    "name": "rs",
    "model": {"name": "tiny"},
    "targets": [{"image": "builtin:astronaut"}],
    "loss": {"regularizers": [{"name": "tv", "weight": 0.01}]},
    "solver": {"name": "adam", "steps": 5},
    "tracking": {"experiment": "ray-sweeps", "image_every": 2},
}


def _children(client: MlflowClient, parent: str):
    experiment = client.get_run(parent).info.experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")


def test_ctrl_c_cancels_outstanding_variants_and_marks_their_runs_killed(
    store, tmp_path, plugins_on_path
):
    # Four long variants on two cores: two run, two wait; Ctrl-C arrives mid-run.
    spec = {
        **BASE,
        "solver": {"name": "adam", "steps": 100_000},
        "tracking": {"experiment": "ray-sweeps", "image_every": 1000},
        "sweep": {"grid": {"seed": [0, 1, 2, 3]}},
    }
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(spec))
    cli = subprocess.Popen(
        [sys.executable, "-m", "facerecon.cli", "sweep", "long.yaml", "--executor", "ray"],
        cwd=tmp_path,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # and, like one, with Ctrl-C's default action: a shell that runs the tests in the
        # background (`pytest &`) passes SIGINT down ignored, and Python then keeps it so
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    client = MlflowClient(store)
    deadline = time.monotonic() + 240
    try:
        while True:  # wait until a variant's run is logging steps
            assert cli.poll() is None, cli.stdout.read().decode()
            assert time.monotonic() < deadline, "no variant started logging in 240 s"
            experiment = client.get_experiment_by_name("ray-sweeps")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if any(r.data.metrics.get("loss/total") for r in runs):
                break
            time.sleep(1)
        os.killpg(cli.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        output = cli.communicate(timeout=120)[0].decode()
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    assert cli.returncode == 130, output
    assert "interrupted" in output
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags] or [
        r
        for r in client.search_runs([experiment.experiment_id])
        if "mlflow.parentRunId" not in r.data.tags
    ]
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["facerecon.killed_variants"] == "seed=0; seed=1; seed=2; seed=3"
    children = _children(client, parent.info.run_id)
    assert children, "no variant had started"
    assert {r.info.status for r in children} == {"KILLED"}, output


@pytest.fixture(scope="module")
def ray_runtime(tmp_path_factory):
    """A real local Ray runtime with two CPUs, its workers seeing the test plugins."""
    site = plugin_site(tmp_path_factory.mktemp("ray-plugins"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(site), str(ROOT)]))
        mp.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield site
    finally:
        ray.shutdown()


def test_ray_sweep_runs_every_variant_under_the_parent_and_survives_a_failure(
    store, ray_runtime, plugins_on_path
):
    spec = validate(
        {
            **BASE,
            "sweep": {
                "grid": {"seed": [0, 1, 2, 3]},
                "variants": [
                    {"name": "broken", "set": {"solver": {"name": "exploding"}}},
                    {"name": "crashed", "set": {"solver": {"name": "exploding", "crash": True}}},
                ],
            },
        }
    )
    ctx = api.sweep(spec, executor="ray")
    statuses = {o.name: o.status for o in ctx.outcomes}
    assert statuses == {
        "seed=0": "FINISHED",
        "seed=1": "FINISHED",
        "seed=2": "FINISHED",
        "seed=3": "FINISHED",
        "broken": "FAILED",
        "crashed": "FAILED",
    }, [o.error for o in ctx.outcomes]
    assert "deliberate failure at step 2" in ctx.outcomes[-2].error
    assert "Worker" in ctx.outcomes[-1].error or "worker" in ctx.outcomes[-1].error
    client = MlflowClient(store)
    parent = client.get_run(ctx.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["facerecon.failed_variants"] == "broken; crashed"
    assert parent.data.tags["facerecon.executor"].startswith("ray")
    children = {r.info.run_name: r for r in _children(client, parent.info.run_id)}
    assert {name: r.info.status for name, r in children.items()} == {
        "rs [seed=0]": "FINISHED",
        "rs [seed=1]": "FINISHED",
        "rs [seed=2]": "FINISHED",
        "rs [seed=3]": "FINISHED",
        "rs [broken]": "FAILED",
        "rs [crashed]": "FAILED",  # left RUNNING by its dead worker, ended by the parent
    }
    broken = children["rs [broken]"]
    assert "deliberate failure" in broken.data.tags["facerecon.error"]
    crashed = children["rs [crashed]"].data.tags["facerecon.error"]
    assert crashed == "its worker stopped before ending the run"
    assert [m.step for m in client.get_metric_history(broken.info.run_id, "loss/total")] == [
        0,
        1,
        2,
    ]
    for name in ("rs [seed=0]", "rs [seed=3]"):
        artifacts = {a.path for a in client.list_artifacts(children[name].info.run_id)}
        assert "final.png" in artifacts
    assert {o.run_id for o in ctx.outcomes} == {r.info.run_id for r in children.values()}
    assert {"contact_sheet.png", "summary.json"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    # Worker start-up is paid once per worker: each worker process built the model once,
    # and a second sweep on the same runtime builds it again only on a worker that is new.
    again = api.sweep(
        validate({**BASE, "sweep": {"grid": {"solver.lr": [0.01, 0.02, 0.03, 0.04]}}}),
        executor="ray",
    )
    assert [o.status for o in again.outcomes] == ["FINISHED"] * 4
    outcomes = [o for o in ctx.outcomes + again.outcomes if o.worker]  # not the crashed one
    workers = {o.worker for o in outcomes}
    assert sum(o.built_model for o in outcomes) == len(workers)
    assert not any(
        o.built_model for o in again.outcomes if o.worker in {w.worker for w in ctx.outcomes}
    )
    assert len(workers) < len(outcomes)


def test_address_is_refused_for_the_local_executor():
    spec = validate({**BASE, "sweep": {"grid": {"seed": [0, 1]}}})
    with pytest.raises(FaceReconError, match="only the `ray` executor connects to a cluster"):
        api.sweep(spec, executor="local", address="127.0.0.1:6379")
    with pytest.raises(FaceReconError, match=r"--workers 2: Ray runs as many variants"):
        api.sweep(spec, executor="ray", workers=2)
    with pytest.raises(FaceReconError, match=r"executor 'rya'.*did you mean 'ray'"):
        api.sweep(spec, executor="rya")


def test_resources_are_validated_with_their_key_path():
    with pytest.raises(FaceReconError, match=r"sweep\.resources\.cpus"):
        validate({**BASE, "sweep": {"grid": {"seed": [0]}, "resources": {"cpus": 0}}})


def test_an_unreachable_cluster_is_one_line_with_its_root_cause():
    from facerecon.engine.executors.ray import _reason

    try:
        try:
            raise RuntimeError(
                "RPC error: InvalidAuthToken: Authentication token is missing. Note: mode..."
            )
        except RuntimeError as inner:
            raise ConnectionError("Failed to connect to GCS. Last connection error: ...") from inner
    except ConnectionError as exc:
        reason = _reason(exc)
    assert "\n" not in reason
    assert reason.startswith("RPC error: InvalidAuthToken: Authentication token is missing")
    assert "RAY_AUTH_MODE=token" in reason
