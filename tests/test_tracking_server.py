"""Remote tracking: a real `mlflow server` on a loopback port (sqlite backend, proxied
artifact store) receives facerecon's runs over HTTP, images and generator model included,
and they read back through the REST API."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
from mlflow import MlflowClient

from facerecon import api
from facerecon.engine.validation import validate
from facerecon_plugins.solvers.feedforward import store as generators

from .servers import free_port, serving

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

RUN = {
    "name": "remote",
    "model": {"name": "tiny"},
    "targets": [{"image": "builtin:astronaut"}],
    "loss": {"regularizers": [{"name": "tv", "weight": 0.01}]},
    "solver": {"name": "adam", "steps": 5},
    "tracking": {"experiment": "remote", "image_every": 2},
}
TRAIN = {
    **RUN,
    "name": "remote-ff",
    "solver": {
        "name": "feedforward",
        "generator": {"filters": 4, "depth": 2},
        "steps": 4,
        "batch": 4,
        "report_every": 2,
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` as the README's team set-up runs it, with sqlite for PostgreSQL."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    cmd = [
        shutil.which("mlflow") or f"{sys.prefix}/bin/mlflow",
        "server",
        "--backend-store-uri", f"sqlite:///{folder}/server.db",
        "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with serving(cmd, port, cwd=folder, env=env) as running:
        running.wait_healthy()
        yield running, folder


@pytest.fixture
def remote(server, tmp_path, monkeypatch):
    running, folder = server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", running.base)
    monkeypatch.chdir(tmp_path)  # nothing may land in a local store
    return running, folder


def _artifacts(running, run_id: str, path: str = "") -> set[str]:
    listing = running.get_json("/api/2.0/mlflow/artifacts/list", run_id=run_id, path=path)
    return {f["path"] for f in listing.get("files", [])}


def test_a_run_and_its_images_reach_the_server(remote, tmp_path):
    running, folder = remote
    result = api.run(validate(RUN))
    run = running.get_json("/api/2.0/mlflow/runs/get", run_id=result.run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["facerecon.model"] == "tiny"
    history = running.get_json(
        "/api/2.0/mlflow/metrics/get-history", run_id=result.run_id, metric_key="loss/total"
    )
    assert [m["step"] for m in history["metrics"]] == [0, 1, 2, 3, 4]
    assert {"final.png", "spec.yaml", "images"} <= _artifacts(running, result.run_id)
    steps = {
        int(p.split("+step+")[1].split("+")[0])
        for p in _artifacts(running, result.run_id, "images")
        if p.endswith(".png")
    }
    assert steps == {0, 2, 4}
    png = running.get("/get-artifact", path="final.png", run_uuid=result.run_id)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # the bytes live in the server's artifact store, not beside the client
    assert list((folder / "artifacts").rglob("final.png"))
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_sweep_keeps_its_parent_and_children_on_the_server(remote):
    running, _ = remote
    spec = validate({**RUN, "sweep": {"grid": {"seed": [0, 1]}}})
    ctx = api.sweep(spec)
    parent = ctx.run_id
    client = MlflowClient(running.base)  # runs/search is a POST: the client speaks REST
    experiment = client.get_experiment_by_name("remote").experiment_id
    found = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.info.status for r in found) == ["FINISHED", "FINISHED"]
    assert {"contact_sheet.png", "summary.json"} <= _artifacts(running, parent)


def test_a_trained_generator_is_stored_on_the_server_and_loads_back(remote):
    running, _ = remote
    result = api.run(validate(TRAIN))
    assert {"generator/MLmodel", "generator/data"} <= _artifacts(
        running, result.run_id, "generator"
    )
    loaded = generators.load(f"runs:/{result.run_id}/generator")
    targets = np.stack([api.embed("builtin:astronaut", model_name="tiny")[0]])
    np.testing.assert_allclose(loaded.generate(targets), result.images, atol=1e-6)
