"""Faults that must not lose work or hang: a dead tracking server, a store that fails after
the solve, two runs creating one store, `facerecon ui` and its signals, diverging runs,
batches too big for memory, and what MLflow shows (run start, experiment kind)."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from facerecon import api
from facerecon.cli import main
from facerecon.core.errors import FaceReconError
from facerecon.engine import runner
from facerecon.engine.validation import validate
from facerecon.tracking import store as tracking
from facerecon_plugins.lifecycle import mlflow_tracking

from .servers import free_port

ROOT = Path(__file__).resolve().parent.parent

SPEC = {
    "name": "faults",
    "model": {"name": "tiny"},
    "targets": [{"image": "builtin:astronaut"}],
    "solver": {"name": "adam", "steps": 4},
    "judges": {"models": [], "detector": None},
    "tracking": {"experiment": "faults", "image_every": 2},
}


def write(tmp_path: Path, spec: dict) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def only_run(uri: str, experiment: str = "faults"):
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, run


# ---- a dead tracking server -------------------------------------------------------------


def test_a_dead_tracking_server_fails_in_seconds_before_any_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the old code's wait, cut
    monkeypatch.chdir(tmp_path)

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the store was checked")

    monkeypatch.setattr(runner, "prepare", no_loading)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["run", write(tmp_path, SPEC)])
    took = time.monotonic() - started
    assert result.exit_code == 1, result.output
    (line,) = errors(result.output)
    assert "does not answer" in line and "--no-track" in line, line
    assert "Traceback" not in result.output
    assert took < 5, took


def test_a_server_that_never_answers_fails_within_the_timeout():
    with socket.socket() as silent:  # listens, never accepts: the connection just waits
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(FaceReconError, match="does not answer.*--no-track"):
            tracking.check_store(f"http://127.0.0.1:{port}", timeout=1)
        assert time.monotonic() - started < 3


def test_a_store_failing_after_the_solve_keeps_the_images_here(tmp_path, store, monkeypatch):
    def gone(self, *args, **kwargs):
        raise MlflowException("API request failed: connection refused")

    monkeypatch.setattr(MlflowClient, "log_artifacts", gone)
    result = CliRunner().invoke(main, ["run", write(tmp_path, SPEC)])
    assert result.exit_code == 1, result.output
    (line,) = errors(result.output)
    assert "could not be stored in MLflow" in line and "connection refused" in line, line
    folder = Path(line.rsplit("images are in ", 1)[1].strip())
    assert folder.parent == tmp_path / "unsaved-runs"
    assert (folder / "final.png").stat().st_size > 0
    assert (folder / "kept" / "target_0.png").stat().st_size > 0
    _, run = only_run(store)
    assert run.info.status == "FAILED"  # the store still answered: the run is ended


# ---- two runs creating one fresh store --------------------------------------------------

RACE = """
import sys, time
from pathlib import Path
from facerecon_plugins.lifecycle import mlflow_tracking as mt
from facerecon.tracking.runs import experiment_id
Path(sys.argv[1]).touch()  # imported; then wait for the other, so both open the store at once
while len(list(Path().glob("ready-*"))) < 2:
    time.sleep(0.01)
client = mt._client()
run = client.create_run(experiment_id(client, "race"))
print("landed", run.info.run_id)
"""


def test_two_runs_creating_a_fresh_store_both_land(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, f"ready-{i}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0 and "landed" in out, err[-2000:]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("race").experiment_id
    assert len(client.search_runs([experiment])) == 2


# ---- facerecon ui -----------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid``, from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_ui_stops_its_whole_server_on_sigterm(tmp_path):
    import urllib.request

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    ui = subprocess.Popen(
        [sys.executable, "-m", "facerecon.cli", "ui", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                assert ui.poll() is None and time.monotonic() < deadline, "no /health"
                time.sleep(0.5)
        server = _children(ui.pid)
        assert server, "the UI runs its server in a child process"
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=30)
        time.sleep(0.5)
        assert not [pid for pid in server if _alive(pid)], "server processes left behind"
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "something still serves"
    finally:
        for pid in server | _children(ui.pid) | {ui.pid}:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        ui.wait(timeout=30)


UI_IN_PROCESS = """
import sys
from facerecon.cli import main
try:
    main(["ui", "--port", sys.argv[1]])
finally:
    print("tensorflow imported:", "tensorflow" in sys.modules)
"""


def test_ui_on_a_port_in_use_exits_non_zero_without_tensorflow(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
        done = subprocess.run(
            [sys.executable, "-c", UI_IN_PROCESS, str(port)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0, done.stderr
    assert f"error: port {port} on 127.0.0.1 is in use" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "tensorflow imported: False" in done.stdout


# ---- diverging runs ---------------------------------------------------------------------

#: a regularizer weight at the float32 limit: the first step's loss is infinite
DIVERGING = {
    **SPEC,
    "loss": {"regularizers": [{"name": "tv", "weight": 3.0e38}]},
}


def test_a_diverged_run_fails_with_one_line_and_keeps_its_images(tmp_path, store):
    result = CliRunner().invoke(main, ["run", write(tmp_path, DIVERGING)])
    assert result.exit_code == 1, result.output
    (line,) = errors(result.output)
    assert "diverged" in line and "lower solver.lr" in line, line
    assert "Traceback" not in result.output
    client, run = only_run(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["facerecon.error"].startswith("diverged")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"final.png", "plots", "kept"} <= artifacts


def test_the_loss_figure_leaves_out_non_finite_values():
    history = {
        "loss/total": [3.0, 2.0, float("inf"), float("nan")],
        "distance": [1.0, 0.5, float("nan"), float("nan")],
        "loss/tv": [float("inf")] * 4,  # never finite: no curve at all
    }
    fig = mlflow_tracking._loss_figure(history, "diverged")
    fig.savefig(io.BytesIO(), format="png")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["loss/total", "distance"]
    assert all(np.isfinite(line.get_ydata()).all() for line in ax.get_lines())


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"solver": {"name": "adam", "lr": float("inf")}}, "solver.lr: Input should be a finite"),
        ({"solver": {"name": "adam", "lr": 1e30}}, "solver.lr: Input should be less than or equal"),
        (
            {"targets": [{"image": "builtin:astronaut", "scale": float("inf")}]},
            "targets[0].scale: Input should be a finite number (got inf)",
        ),
        (
            {"loss": {"regularizers": [{"name": "tv", "weight": 1e39}]}},
            "loss.regularizers[0].weight: Input should be less than or equal to 3.40282e+38 "
            "(got 1e+39)",
        ),
        (
            {"loss": {"regularizers": [{"name": "tv", "schedule": {"rate": float("nan")}}]}},
            "loss.regularizers[0].schedule.rate: Input should be a finite number",
        ),
    ],
)
def test_infinite_and_overflowing_numbers_are_validation_errors(change, line):
    with pytest.raises(FaceReconError) as caught:
        validate({**SPEC, **change})
    assert any(problem.startswith(line) for problem in caught.value.lines), caught.value.lines


# ---- batches too big for memory ---------------------------------------------------------


def test_a_batch_too_big_for_memory_fails_validation(tmp_path):
    result = CliRunner().invoke(main, ["validate", write(tmp_path, {**SPEC, "restarts": 100000})])
    assert result.exit_code == 1, result.output
    (line,) = errors(result.output)
    assert "restarts: a batch of 100000 images" in line and "GB" in line, line
    assert "the limit is" in line
    # 32x32 x 3 values x 128 bytes each, 100000 times
    assert f"needs about {100000 * 32 * 32 * 3 * 128 / 1024**3:.1f} GB" in line, line


# ---- what MLflow shows ------------------------------------------------------------------


def test_the_run_starts_when_the_run_starts(store, monkeypatch):
    made = mlflow_tracking._client

    def slow_client():  # as in a fresh process, where importing MLflow takes seconds
        time.sleep(2)
        return made()

    monkeypatch.setattr(mlflow_tracking, "_client", slow_client)
    before = int(time.time() * 1000)
    api.run(validate(SPEC))
    _, run = only_run(store)
    assert before <= run.info.start_time < before + 1000
    assert run.info.end_time - run.info.start_time >= 2000


def test_facerecon_experiments_open_in_the_model_training_view(store):
    api.run(validate(SPEC))
    experiment = MlflowClient(store).get_experiment_by_name("faults")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
