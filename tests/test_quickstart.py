"""The front door on the real dlib-resnet model: the quickstart spec, and the MLflow UI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mlflow import MlflowClient

from facerecon import api
from facerecon.spec import PluginRef, load

from .servers import free_port, serving

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
    port = free_port()
    cmd = [sys.executable, "-m", "facerecon.cli", "ui", "--port", str(port)]
    with serving(cmd, port, cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": store}) as ui:
        ui.wait_healthy(120)
        body = ui.get_json("/api/2.0/mlflow/runs/get", run_id=run_id)
        assert body["run"]["info"]["status"] == "FINISHED"
        listing = ui.get_json("/api/2.0/mlflow/artifacts/list", run_id=run_id)
        assert "final.png" in {f["path"] for f in listing["files"]}
        assert ui.get("/get-artifact", path="final.png", run_uuid=run_id)[:4] == b"\x89PNG"
