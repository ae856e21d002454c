"""The team set-up's authenticated tracking server, for real: `mlflow server --app-name
basic-auth` on a loopback port, accounts made through MLflow's own admin client, and
facerecon clients that authenticate only through MLflow's environment variables."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import warnings

import pytest
from mlflow import MlflowClient
from mlflow.server import get_app_client

from facerecon import api
from facerecon.core.errors import FaceReconError
from facerecon.engine.executors.ray import RayExecutor
from facerecon.engine.validation import validate
from facerecon.tracking import store as tracking

from .servers import free_port, serving

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ADMIN = ("admin", "admin-" + secrets.token_hex(8))
ALICE = ("alice", "alice-" + secrets.token_hex(8))  # owns the experiment "alice-lab"
BOB = ("bob", "bob-" + secrets.token_hex(8))  # reads everything, edits nothing of hers

RUN = {
    "name": "authed",
    "model": {"name": "tiny"},
    "targets": [{"image": "builtin:astronaut"}],
    "solver": {"name": "adam", "steps": 4},
    "judges": {"models": [], "detector": None},
    "tracking": {"experiment": "alice-lab", "image_every": 2},
}


def _as(monkeypatch, account: tuple[str, str] | None) -> None:
    """Credentials the way MLflow's client takes them: the environment, nothing else."""
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    if account is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", account[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", account[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The README's authenticated server (sqlite for PostgreSQL), with alice and bob."""
    folder = tmp_path_factory.mktemp("auth-server")
    (folder / "auth.ini").write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{folder}/basic_auth.db\n"
        f"admin_username = {ADMIN[0]}\n"
        f"admin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    cmd = [
        shutil.which("mlflow") or f"{sys.prefix}/bin/mlflow",
        "server", "--app-name", "basic-auth",
        "--backend-store-uri", f"sqlite:///{folder}/server.db",
        "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    with serving(cmd, port, cwd=folder, env=env) as running, pytest.MonkeyPatch.context() as mp:
        running.wait_healthy()
        _as(mp, ADMIN)
        admin = get_app_client("basic-auth", tracking_uri=running.base)
        for name, password in (ALICE, BOB):
            admin.create_user(name, password)
        _as(mp, ALICE)  # the creator of an experiment may manage it
        MlflowClient(running.base).create_experiment("alice-lab")
        yield running


@pytest.fixture
def remote(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.base)
    monkeypatch.chdir(tmp_path)  # nothing may land in a local store
    return server


def _runs(monkeypatch, base: str) -> list:
    """Every run of alice-lab, read by the admin."""
    _as(monkeypatch, ADMIN)
    client = MlflowClient(base)
    experiment = client.get_experiment_by_name("alice-lab").experiment_id
    return client.search_runs([experiment])


def _never_solve(monkeypatch) -> None:
    def solve(*args, **kwargs):
        raise AssertionError("the run started although the server refused the credentials")

    monkeypatch.setattr(api, "run_spec", solve)


def test_a_valid_account_logs_its_run(remote, monkeypatch):
    _as(monkeypatch, ALICE)
    result = api.run(validate(RUN))
    run = {r.info.run_id: r for r in _runs(monkeypatch, remote.base)}[result.run_id]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.user"] == "alice"
    assert run.data.metrics["final/distance"] == pytest.approx(result.terms["distance"][0])


@pytest.mark.parametrize("account", [(ALICE[0], "not-her-password"), None])
def test_wrong_or_missing_credentials_fail_before_anything_runs(remote, monkeypatch, account):
    before = len(_runs(monkeypatch, remote.base))
    _as(monkeypatch, account)
    _never_solve(monkeypatch)
    with pytest.raises(FaceReconError) as caught:
        api.run(validate(RUN))
    assert len(caught.value.lines) == 1
    line = caught.value.lines[0]
    assert line.startswith("the tracking server refused these credentials (401)")
    assert ("'alice'" if account else "MLFLOW_TRACKING_USERNAME") in line
    assert len(_runs(monkeypatch, remote.base)) == before


def test_an_account_without_edit_permission_cannot_log_until_granted(remote, monkeypatch):
    before = {r.info.run_id for r in _runs(monkeypatch, remote.base)}
    _as(monkeypatch, BOB)
    with monkeypatch.context() as m:
        _never_solve(m)
        with pytest.raises(FaceReconError) as caught:
            api.run(validate(RUN))
    assert caught.value.lines == [
        f"the tracking server denies 'bob' permission to log to experiment 'alice-lab' (403): "
        f"{remote.base}; ask the experiment's owner or an admin for EDIT permission, or use "
        "another tracking.experiment"
    ]
    assert {r.info.run_id for r in _runs(monkeypatch, remote.base)} == before
    # Past the check (a permission revoked while the model loads), the server's own 403 at
    # the run's creation stops the solve at its first step, with the same line.
    _as(monkeypatch, BOB)
    with monkeypatch.context() as m:
        m.setattr(tracking, "_may_edit", lambda *args: True)
        with pytest.raises(FaceReconError) as late:
            api.run(validate(RUN))
    assert late.value.lines == caught.value.lines
    assert {r.info.run_id for r in _runs(monkeypatch, remote.base)} == before
    # bob may read alice-lab (the server's default permission) ...
    _as(monkeypatch, BOB)
    assert MlflowClient(remote.base).get_experiment_by_name("alice-lab") is not None
    # ... and log to it once its owner grants him EDIT
    _as(monkeypatch, ALICE)
    experiment = MlflowClient(remote.base).get_experiment_by_name("alice-lab").experiment_id
    get_app_client("basic-auth", tracking_uri=remote.base).grant_user_permission(
        "bob", "experiment", experiment, "EDIT"
    )
    _as(monkeypatch, BOB)
    result = api.run(validate(RUN))
    runs = {r.info.run_id: r for r in _runs(monkeypatch, remote.base)}
    assert runs[result.run_id].info.status == "FINISHED"
    assert runs[result.run_id].data.tags["mlflow.user"] == "bob"


def test_a_ray_sweep_with_credentials_in_the_environment_lands_every_child(
    remote, monkeypatch, plugins_on_path
):
    _as(monkeypatch, ALICE)  # the local Ray runtime's workers start with this environment
    spec = validate({**RUN, "name": "authed-sweep", "sweep": {"grid": {"seed": [0, 1, 2]}}})
    ctx = api.sweep(spec, executor="ray")
    parent = ctx.run_id
    runs = _runs(monkeypatch, remote.base)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert sorted(r.info.status for r in children) == ["FINISHED"] * 3
    assert {r.data.tags["mlflow.user"] for r in children} == {"alice"}
    assert {r.info.run_id: r for r in runs}[parent].info.status == "FINISHED"


def test_ray_workers_without_valid_credentials_fail_the_sweep_before_it_starts(
    remote, monkeypatch, plugins_on_path
):
    # The submitting process's own check passed earlier; here the workers (started now,
    # with this environment) hold a wrong password: the probe on a worker says so.
    _as(monkeypatch, (ALICE[0], "stale-password"))
    with pytest.raises(FaceReconError) as caught, RayExecutor(None, 1.0, 0.0, "alice-lab"):
        pass
    assert caught.value.lines[0].startswith(
        "on a Ray worker: the tracking server refused these credentials (401)"
    )


@pytest.mark.parametrize(
    ("uri", "warned"),
    [
        ("http://mlflow.lab:5000", True),
        ("http://10.1.2.3:5000", True),
        ("https://mlflow.lab", False),
        ("http://127.0.0.1:5000", False),
        ("http://localhost:5000", False),
        ("http://[::1]:5000", False),
    ],
)
def test_credentials_over_plain_http_to_another_machine_are_warned_about(uri, warned):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracking.warn_if_plain(uri)
    messages = [str(w.message) for w in caught]
    assert len(messages) == warned
    assert all(
        m.startswith(f"MLFLOW_TRACKING_URI={uri}: ") and "unencrypted" in m for m in messages
    )


def test_the_store_check_warns_before_it_sends_credentials_in_the_clear(monkeypatch):
    _as(monkeypatch, ALICE)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(FaceReconError) as failed:
        warnings.simplefilter("always")
        tracking.check_store("http://192.0.2.1:5000", timeout=0.5)  # TEST-NET-1: no one
    assert "unencrypted" in str(caught[0].message)
    assert failed.value.lines[0].startswith("tracking server http://192.0.2.1:5000 does not answer")
