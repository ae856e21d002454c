"""The front door on the real dlib-resnet model: the quickstart spec, and the MLflow UI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from facerecon import api
from facerecon.core.registry import registry
from facerecon.core.spec import PluginRef
from facerecon.engine.runner import instantiate
from facerecon.engine.validation import load
from facerecon.faces import photos as faces
from facerecon_plugins.models.faceres.model import Faceres

from .servers import free_port, serving

QUICKSTART = Path(__file__).resolve().parent.parent / "experiments" / "quickstart.yaml"


def test_quickstart_reconstruction_approaches_the_target(store):
    spec = load(QUICKSTART)
    short = spec.model_copy(update={"solver": spec.solver.model_copy(update={"steps": 60})})
    result = api.run(short)
    assert result.images.shape == (1, 150, 150, 3)
    (kept,) = result.best
    assert result.terms["distance"][kept] < 0.6  # dlib's same-person threshold
    run = MlflowClient(store).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["facerecon.model"] == "dlib-resnet"

    # An independent recognizer, computed here without the judging code: faceres finds
    # the reconstruction much closer to the astronaut's photo than the mean face it
    # started from (which scores like a stranger).
    faceres = Faceres()
    photo = faceres.align(faces.read_image("builtin:astronaut"))[0].image
    start = faces.mean_chip(instantiate(registry(), "model", spec.model), "builtin:radar", True)
    chips = np.stack([photo, faceres.align_chip(start), faceres.align_chip(result.images[kept])])
    emb = faceres.network()(chips).numpy()
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    before, after = emb[1] @ emb[0], emb[2] @ emb[0]
    assert after > before + 0.1
    assert result.judges[0]["faceres"]["type1"] == pytest.approx(float(after), abs=1e-4)
    assert run.data.metrics["judge/faceres/type1"] == pytest.approx(float(after), abs=1e-4)


def test_ui_serves_the_store_on_localhost(tmp_path, store):
    spec = load(QUICKSTART)
    tiny = spec.model_copy(
        update={
            "model": PluginRef(name="tiny"),
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
