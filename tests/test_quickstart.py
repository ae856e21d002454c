"""The front door on the real dlib-resnet model: the quickstart spec, and the MLflow UI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlflow import MlflowClient

from facerecon import api
from facerecon.spec import PluginRef, load

QUICKSTART = Path(__file__).resolve().parent.parent / "experiments" / "quickstart.yaml"


def test_quickstart_reconstruction_approaches_the_target(store):
    spec = load(QUICKSTART)
    short = spec.model_copy(update={"solver": spec.solver.model_copy(update={"steps": 40})})
    initial = api.run(
        short.model_copy(
            update={
                "solver": spec.solver.model_copy(update={"steps": 1}),
                "tracking": spec.tracking.model_copy(update={"enabled": False}),
            }
        )
    )
    result = api.run(short)
    assert result.images.shape == (2, 150, 150, 3)
    # the kept candidate is the closer one, and 40 steps bring it well towards the target
    (kept,) = result.best
    assert result.terms["distance"][kept] == result.terms["distance"].min()
    assert result.terms["distance"][kept] < 0.6 * initial.terms["distance"].min()
    assert result.terms["distance"][kept] < 0.6  # dlib's same-person threshold
    run = MlflowClient(store).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["facerecon.model"] == "dlib-resnet"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_store_on_localhost(tmp_path, store):
    spec = load(QUICKSTART)
    tiny = spec.model_copy(
        update={
            "model": PluginRef(name="tiny"),
            "guides": spec.guides[1:],
            "loss": spec.loss.model_copy(update={"regularizers": spec.loss.regularizers[:1]}),
            "init": spec.init.model_copy(update={"kind": "noise"}),
            "solver": spec.solver.model_copy(update={"steps": 3}),
        }
    )
    run_id = api.run(tiny).run_id
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    server = subprocess.Popen(
        [sys.executable, "-m", "facerecon.cli", "ui", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "MLflow UI did not come up in 120 s"
                assert server.poll() is None, "facerecon ui exited"
                time.sleep(1)
        url = f"{base}/api/2.0/mlflow/runs/get?run_id={run_id}"
        body = json.load(urllib.request.urlopen(url, timeout=10))
        assert body["run"]["info"]["status"] == "FINISHED"
        listing = json.load(
            urllib.request.urlopen(
                f"{base}/api/2.0/mlflow/artifacts/list?run_id={run_id}", timeout=10
            )
        )
        assert "final.png" in {f["path"] for f in listing["files"]}
        png = urllib.request.urlopen(
            f"{base}/get-artifact?path=final.png&run_uuid={run_id}", timeout=10
        ).read()
        assert png[:4] == b"\x89PNG"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
