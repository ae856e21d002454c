"""Where runs are tracked: the embedded sqlite store unless MLFLOW_TRACKING_URI says otherwise."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from facerecon.errors import FaceReconError

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"

#: How long the pre-run check waits for an HTTP tracking server: MLflow's own client
#: retries for minutes (7 retries, exponential back-off) before it gives up.
CHECK_SECONDS = 5.0

#: The experiment tag that names an experiment's kind: the model-training view (runs,
#: metrics, images), not the GenAI one (evaluations, traces). MLflow 3.17.2's UI has its
#: GenAI / Model-training switch always on and ignores the tag (it opens GenAI unless the
#: URL says `workflowType=machine_learning` or the user picked "Model training" once);
#: the tag is set for UIs that read it, and :func:`experiment_urls` carry the parameter.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
TRAINING_VIEW = "workflowType=machine_learning"


def tracking_uri() -> str:
    """The tracking URI in force; creates ``mlruns/`` for the embedded default."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri == DEFAULT_URI:
        Path("mlruns").mkdir(exist_ok=True)
    return uri


def absolute_uri(uri: str) -> str:
    """A sqlite URI with its relative path made absolute (for processes started elsewhere)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested spec data as MLflow params: ``loss.regularizers.0.weight -> "0.002"``."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return {prefix: str(data)}
    out: dict[str, str] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def git_commit() -> str | None:
    """The commit of the facerecon checkout this code runs from, if it is one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return Path(uri[len(prefix) :].split("?")[0])


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a sqlite store's file (nothing for other stores).

    Two processes that open a fresh store at once both run MLflow's schema migrations, and
    one dies (``duplicate column name: step``); under the lock the second finds the schema
    made.
    """
    import fcntl

    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def client(uri: str | None = None):
    """An ``MlflowClient`` on the store in force, its schema created (under the store lock)."""
    import mlflow

    uri = uri or tracking_uri()
    with store_lock(uri):  # the client opens the store: creates or migrates its schema
        made = mlflow.MlflowClient(uri)
        made.search_experiments(max_results=1)
    return made


def check_store(uri: str | None = None, timeout: float = CHECK_SECONDS) -> None:
    """Fail within ``timeout`` seconds, with one line, if an HTTP tracking server does not
    answer (file and database stores are opened when the run starts)."""
    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError as exc:
        if exc.code < 500:  # it answers (a 401 or 403 is the client's to sort out)
            return
        why = f"HTTP {exc.code} {exc.reason}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        why = f"{type(reason).__name__}: {reason}"
    else:
        return
    raise FaceReconError(
        f"tracking server {uri} does not answer ({why}); start it, point "
        "MLFLOW_TRACKING_URI elsewhere, or run with --no-track"
    )


def experiment_urls(base: str, uri: str | None = None) -> list[tuple[str, str]]:
    """(name, URL) of every active experiment in the store, each opening in the UI's
    model-training view."""
    experiments = client(uri).search_experiments()
    return [
        (e.name, f"{base}/#/experiments/{e.experiment_id}?{TRAINING_VIEW}")
        for e in sorted(experiments, key=lambda e: e.name)
    ]


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def serve_ui(host: str = "127.0.0.1", port: int = 5000, grace: float = 10.0) -> int:
    """Serve the MLflow UI on the store in force until it exits; returns its exit code.

    The server (``mlflow server`` of this Python, with its uvicorn children) runs in a
    process group of its own; SIGTERM and SIGINT to this process are sent to that whole
    group, so none of it outlives us, and anything left after ``grace`` seconds is killed.
    """
    if not _port_free(host, port):
        raise FaceReconError(f"port {port} on {host} is in use; choose another with --port")
    uri = tracking_uri()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    cmd += ["--host", host, "--port", str(port), "--workers", "1"]
    if uri.startswith("sqlite:///mlruns/"):
        cmd += ["--default-artifact-root", str(Path("mlruns").resolve())]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(cmd, env=env, process_group=0)

    def forward(signum: int, frame: Any) -> None:
        _signal_group(server.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = server.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _stop_group(server, grace)
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError):  # the group has already gone
        os.killpg(pgid, signum)


def _stop_group(server: subprocess.Popen, grace: float) -> None:
    """Stop what is left of the server's process group (uvicorn workers outlive their
    supervisor when it is killed): SIGTERM, then SIGKILL after ``grace`` seconds."""
    import time

    _signal_group(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    _signal_group(server.pid, signal.SIGKILL)
