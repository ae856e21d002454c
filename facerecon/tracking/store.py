"""Where runs are tracked: the embedded sqlite store unless MLFLOW_TRACKING_URI says otherwise."""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from facerecon.core.errors import FaceReconError

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
    """The tracking URI in force; creates ``mlruns/`` for the embedded default (where it
    can: :func:`check_store` says why not)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri == DEFAULT_URI:
        with suppress(OSError):
            Path("mlruns").mkdir(exist_ok=True)
    return uri


def absolute_uri(uri: str) -> str:
    """A sqlite URI with its relative path made absolute (for processes started elsewhere)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def safe_key(name: str) -> str:
    """A name as a file name or an MLflow key part: runs of other characters than letters,
    digits, ``_``, ``.`` and ``-`` become ``_``."""
    return re.sub(r"[^\w.-]+", "_", name)


#: The longest folder name :func:`safe_name` makes: room for a time stamp after it, and
#: within every file system's 255 bytes in UTF-8.
NAME_LIMIT = 64


def safe_name(name: str, limit: int = NAME_LIMIT) -> str:
    """A name as one folder name that stays where it is put: :func:`safe_key`'s
    characters, no leading ``.`` (so neither ``..`` nor a hidden folder), at most
    ``limit`` characters; ``_`` for an empty name."""
    slug = re.sub(r"^\.+", "_", safe_key(name))[:limit]
    while len(slug.encode()) > 200:  # letters of up to 4 bytes each
        slug = slug[:-1]
    return slug or "_"


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


def check_store(
    uri: str | None = None, experiment: str | None = None, timeout: float = CHECK_SECONDS
) -> None:
    """Fail within seconds, with one line, if an HTTP tracking server does not answer,
    refuses the credentials, or (on MLflow's basic-auth server) denies the account EDIT on
    ``experiment`` (file and database stores are opened when the run starts). The
    credentials are MLflow's own (``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``, ``~/.mlflow/credentials``),
    read by MLflow's client code; warns once if they would cross the network unencrypted.
    A sqlite store's folder must be writable (:func:`check_writable`)."""
    uri = uri or tracking_uri()
    if sqlite_path(uri) is not None:
        check_writable(uri)
    if not uri.startswith(("http://", "https://")):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)
    if creds.password or creds.token:
        warn_if_plain(uri)
    try:
        response = http_request(
            creds,
            "/api/2.0/mlflow/experiments/search",
            "GET",
            params={"max_results": 1},
            max_retries=0,
            timeout=timeout,
            raise_on_status=False,
        )
    except MlflowException as exc:  # no answer: refused, unknown host, timed out
        why = str(exc).split(" failed with exception ")[-1].splitlines()[0][:200]
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            raise FaceReconError(
                f"tracking server {uri}: its TLS certificate is not trusted here; set "
                "MLFLOW_TRACKING_SERVER_CERT_PATH to the certificate (or the lab's CA) that "
                "signed it"
            ) from None
        raise FaceReconError(
            f"tracking server {uri} does not answer ({why}); start it, point "
            "MLFLOW_TRACKING_URI elsewhere, or run with --no-track"
        ) from None
    if response.status_code == 403 and "Invalid Host header" in response.text:
        host = urllib.parse.urlsplit(uri).netloc
        raise FaceReconError(
            f"tracking server {uri} refuses the Host header '{host}' (403); add it to the "
            "server's --allowed-hosts, or use the name it lists"
        )
    if response.status_code in (401, 403):
        raise FaceReconError(refusal(uri, response.status_code, creds.username))
    if response.status_code >= 500:
        raise FaceReconError(
            f"tracking server {uri} does not answer (HTTP {response.status_code} "
            f"{response.reason}); start it, point MLFLOW_TRACKING_URI elsewhere, or run "
            "with --no-track"
        )
    if experiment and creds.username and not _may_edit(creds, experiment, timeout):
        raise FaceReconError(refusal(uri, 403, creds.username, experiment))


def check_writable(uri: str) -> None:
    """One line, before anything runs, if a sqlite store cannot be written: its folder
    (where sqlite keeps its journal and facerecon its lock, and the default store its
    artifacts), the database file, the lock file. A read-only checkout otherwise loads
    the model, runs a step and then dies on the lock."""
    path = sqlite_path(uri)
    if path is None:
        return
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # os.access says yes to root on a read-only mount: only a write tells
        with tempfile.TemporaryFile(dir=folder, prefix=".facerecon-check-"):
            pass
        for existing in (path, Path(f"{path}.lock")):
            if existing.exists():
                with open(existing, "r+b"):  # opened for writing, nothing written
                    pass
    except OSError as error:
        where = Path(error.filename or folder).absolute()
        raise FaceReconError(
            f"the run store {uri} cannot be written ({error.strerror}: {where}); set "
            "MLFLOW_TRACKING_URI to a store you can write (e.g. "
            "sqlite:////tmp/mlruns/mlflow.db), or run with --no-track"
        ) from None


def _may_edit(creds: Any, experiment: str, timeout: float) -> bool:
    """False only when the server says the account lacks EDIT on an existing experiment
    (a new one is its creator's to manage); True when it cannot tell (no auth app)."""
    from mlflow.utils.rest_utils import http_request

    def get(endpoint: str, **params: str) -> tuple[int, dict]:
        response = http_request(
            creds, endpoint, "GET", params=params, max_retries=0, timeout=timeout,
            raise_on_status=False,
        )  # fmt: skip
        return response.status_code, response.json() if response.status_code == 200 else {}

    status, found = get("/api/2.0/mlflow/experiments/get-by-name", experiment_name=experiment)
    if status != 200:  # 404: a new experiment; 403: not even READ
        return status != 403
    status, granted = get(
        "/api/3.0/mlflow/users/permissions/get",
        username=creds.username,
        resource_type="experiment",
        resource_id=found["experiment"]["experiment_id"],
    )
    return status != 200 or granted.get("permission") in ("EDIT", "MANAGE")


def refusal(uri: str, status: int, username: str | None, experiment: str | None = None) -> str:
    """The one line for a tracking server's 401 (who are you?) or 403 (not allowed)."""
    if status == 401:
        who = (
            f"the account '{username}' and its password"
            if username
            else "no MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
        )
        return (
            f"the tracking server refused these credentials (401): {uri} with {who}; set "
            "the right ones in the environment (README, 'Team set-up'), or run with --no-track"
        )
    what = f"log to experiment '{experiment}'" if experiment else "read its experiments"
    return (
        f"the tracking server denies '{username or 'this account'}' permission to {what} "
        f"(403): {uri}; ask the experiment's owner or an admin for EDIT permission, or use "
        "another tracking.experiment"
    )


def refused(error: BaseException, experiment: str | None = None) -> FaceReconError | None:
    """An MLflow client error that is the server refusing the credentials or the
    permission, as the one line that says so; None for any other error."""
    code = getattr(error, "error_code", None)
    status = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}.get(code or "")
    if status is None:
        return None
    from mlflow.utils.credentials import read_mlflow_creds

    return FaceReconError(refusal(tracking_uri(), status, read_mlflow_creds().username, experiment))


#: what a full disk says here: the OS (ENOSPC; EDQUOT, over quota), and sqlite (SQLITE_FULL)
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_SQLITE_FULL = "database or disk is full"


def no_space(error: BaseException | None) -> str | None:
    """The mount point of the full disk if ``error`` (or an error that caused it) is a
    local disk's being full: the disk of the file it names (else of the working folder),
    or of the sqlite store's file; None for any other error (a tracking server's full disk
    is the server's error)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
            # a copy (shutil's sendfile) names its source first and its destination second
            return mount_point(Path(error.filename2 or error.filename or "."))
        if _SQLITE_FULL in str(error) and (database := sqlite_path(tracking_uri())):
            return mount_point(database)
        error = error.__cause__ or error.__context__
    return None


def mount_point(path: Path) -> str:
    """The mount point of the file system that holds ``path`` (which need not exist)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return str(path)


def account() -> str:
    """Who the runs belong to (the ``mlflow.user`` tag): the tracking account MLflow's
    client authenticates as, else the local user, as MLflow's fluent API has it."""
    import getpass

    from mlflow.utils.credentials import read_mlflow_creds

    return read_mlflow_creds().username or getpass.getuser()


def warn_if_plain(uri: str) -> None:
    """One warning when credentials would go unencrypted (``http://``) to another machine."""
    parsed = urllib.parse.urlsplit(uri)
    host = parsed.hostname or ""
    if parsed.scheme != "http" or host == "localhost" or _loopback(host):
        return
    warnings.warn(
        f"MLFLOW_TRACKING_URI={uri}: credentials go to {host} unencrypted over plain http; "
        "use https (README, 'Team set-up': TLS in front of the server)",
        stacklevel=2,
    )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, not an address
        return False


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
