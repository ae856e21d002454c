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


# ---- a full disk, a read-only checkout, a damaged cache, a killed run -------------------

#: a child ``facerecon`` command line with the tiny model; FILL_THE_DISK fills the working
#: folder's disk at step 1, NO_LOADING exits 3 if the run gets as far as loading the model,
#: HEARTBEAT_SECONDS sets the tracking heartbeat's period
CHILD = """
import os, sys
from facerecon import hookimpl
from facerecon.core.registry import plugin_manager
from facerecon.engine import runner
from facerecon.tracking import runs
from tests import tiny_model

class FillTheDisk:
    @hookimpl
    def after_step(self, context, step):
        if step.step == 1:  # another job takes the last byte of the working folder's disk
            try:
                with open("filler", "wb", buffering=0) as f:
                    while True:
                        f.write(bytes(2**14))
            except OSError:
                pass

pm = plugin_manager()
pm.register(tiny_model, name="tests.tiny")
if os.environ.get("FILL_THE_DISK"):
    pm.register(FillTheDisk())
if os.environ.get("NO_LOADING"):
    def no_loading(*args, **kwargs):
        print("the model was loaded", flush=True)
        os._exit(3)
    runner.prepare = no_loading
if os.environ.get("HEARTBEAT_SECONDS"):
    runs.HEARTBEAT_SECONDS = float(os.environ["HEARTBEAT_SECONDS"])
from facerecon.cli import main
main(sys.argv[1:])
"""


def _child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return {**env, **extra}


def _namespaces_allowed() -> bool:
    """Whether this machine lets a process mount in a user and mount namespace of its own
    (its mounts are private to it and vanish with it)."""
    import shutil
    import tempfile

    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run(
            ["unshare", "-Urm", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", folder],
            capture_output=True,
            timeout=30,
        )
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not _namespaces_allowed(), reason="no user and mount namespaces here (unshare -Urm)"
)


def _in_namespace(mounts: str, work: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """``python -c CHILD ARGS`` in ``work`` after the shell lines ``mounts``, in a mount
    namespace of its own; afterwards ``work``'s ``mlruns`` and ``unsaved-runs`` are copied
    to ``work``-out (a tmpfs vanishes with its namespace)."""
    out = work.with_name(work.name + "-out")
    out.mkdir()
    script = (
        f'{mounts}\ncd "$WORK" || exit 99\n"$PY" -c "$CHILD" "$@"; rc=$?\n'
        'for d in mlruns unsaved-runs; do [ -e "$d" ] && cp -a "$d" "$OUT/"; done\nexit $rc\n'
    )
    env = {**env, "WORK": str(work), "OUT": str(out), "PY": sys.executable, "CHILD": CHILD}
    return subprocess.run(
        ["unshare", "-Urm", "sh", "-c", script, "sh", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _empty_or_broken_files(folder: Path) -> list[str]:
    """Files a full disk left behind: empty ones (not the store's lock), half-written
    PNGs (PIL cannot read them), and temporary ``.partial`` names."""
    from PIL import Image

    bad = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".lock" or path.name == "mlflow.db":
            continue
        if path.stat().st_size == 0 or ".partial" in path.name:
            bad.append(str(path))
        elif path.suffix in (".png", ".webp"):
            try:
                with Image.open(path) as image:
                    image.load()
            except OSError:
                bad.append(str(path))
    return bad


FULL_DISK_STEPS = 6


@needs_namespaces
@pytest.mark.parametrize(
    ("database", "filled"),
    [("elsewhere", "at step 1"), ("here", "at step 1"), ("elsewhere", "before the run")],
)
def test_a_full_disk_ends_the_run_in_one_line_and_leaves_no_empty_files(tmp_path, database, filled):
    """The working folder is a 4 MB tmpfs that another job fills, at step 1 or before the
    run. The store's database is elsewhere (its artifacts and unsaved-runs/ are here), or
    here too, as in the quickstart: then nothing can end the run until there is space."""
    work = tmp_path / "work"
    work.mkdir()
    spec = {**SPEC, "solver": {"name": "adam", "steps": FULL_DISK_STEPS}}
    uri = {"elsewhere": f"sqlite:///{tmp_path}/store/mlflow.db", "here": None}[database]
    mounts = 'mount -t tmpfs -o size=4m tmpfs "$WORK" || exit 98\n'
    mounts += f'cp "{write(tmp_path, spec)}" "$WORK/spec.yaml"\n'
    if filled == "before the run":
        mounts += 'dd if=/dev/zero of="$WORK/filler" bs=16k 2>/dev/null\n'
    env = {"FILL_THE_DISK": "1"} if filled == "at step 1" else {}
    done = _in_namespace(
        mounts,
        work,
        _child_env(**env, **({"MLFLOW_TRACKING_URI": uri} if uri else {})),
        "run",
        "spec.yaml",
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    (line,) = errors(done.stderr)
    assert f"no space left on {work};" in line and "free some space" in line, line
    saved = work.with_name("work-out")
    assert _empty_or_broken_files(saved) == []
    if uri is None:  # the store's own disk is full: the line says how to end the run later
        assert "could not be ended" in line and "facerecon runs --end-stale" in line, line
        _, run = only_run(f"sqlite:///{saved}/mlruns/mlflow.db")
        assert run.info.status == "RUNNING"
        assert run.info.run_id in line
        return
    client, run = only_run(uri)
    assert run.info.status == "FAILED"
    assert "no space left on" in run.data.tags["facerecon.error"].lower()
    history = client.get_metric_history(run.info.run_id, "distance")
    if filled == "before the run":  # its spec could not be stored: it stops at step 0
        assert history == []
        return
    assert "is ended FAILED" in line, line
    # the metrics do not depend on the full disk: every step's are in the store
    assert [m.step for m in history] == list(range(FULL_DISK_STEPS))


def test_a_disk_full_at_the_artifacts_ends_the_run_first(tmp_path, store):
    """The same in this process: from step 1 every file opened for writing in the working
    folder is made, but no byte can be written to it (ENOSPC), as on a full disk."""
    import builtins
    import errno
    import shutil

    from facerecon import hookimpl
    from facerecon.core.registry import plugin_manager

    real_open = builtins.open
    root = tmp_path.resolve()

    class Full:
        def __init__(self, file):
            self._file = file

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self._file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._file.close()

        def __iter__(self):
            return iter(self._file)

    def full_open(file, mode="r", *args, **kwargs):
        opened = real_open(file, mode, *args, **kwargs)
        writes = any(c in mode for c in "wax+")
        if (
            writes
            and isinstance(file, str | os.PathLike)
            and Path(file).resolve().is_relative_to(root)
        ):
            return Full(opened)
        return opened

    class FillTheDisk:
        @hookimpl
        def after_step(self, context, step):
            if step.step == 1:
                full.setattr(builtins, "open", full_open)
                full.setattr(shutil, "_USE_CP_SENDFILE", False)  # copies write through open

    pm = plugin_manager()
    filler = FillTheDisk()
    pm.register(filler)
    spec = {**SPEC, "solver": {"name": "adam", "steps": FULL_DISK_STEPS}}
    try:
        with pytest.MonkeyPatch.context() as full:
            result = CliRunner().invoke(main, ["run", write(tmp_path, spec)])
    finally:
        pm.unregister(filler)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = errors(result.output)
    assert "no space left on " in line, line
    client, run = only_run(store)
    assert run.info.status == "FAILED"
    assert "No space left on device" in run.data.tags["facerecon.error"]
    history = client.get_metric_history(run.info.run_id, "distance")
    assert [m.step for m in history] == list(range(FULL_DISK_STEPS))
    assert _empty_or_broken_files(tmp_path) == []


@needs_namespaces
@pytest.mark.parametrize("store_made", [True, False], ids=["store-made", "no-mlruns"])
def test_a_read_only_checkout_is_refused_before_loading(tmp_path, store_made):
    """The quickstart in a checkout mounted read-only, with the default store (made by an
    earlier run, or not yet)."""
    work = tmp_path / "work"
    (work / "mlruns").mkdir(parents=True)
    if store_made:
        tracking.client(f"sqlite:///{work}/mlruns/mlflow.db")
    else:
        (work / "mlruns").rmdir()
    (work / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    done = _in_namespace(
        'mount --bind "$WORK" "$WORK" && mount -o remount,bind,ro "$WORK" || exit 98',
        work,
        _child_env(NO_LOADING="1"),
        "run",
        "spec.yaml",
    )
    assert "the model was loaded" not in done.stdout
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    (line,) = errors(done.stderr)
    assert "mlruns" in line and "MLFLOW_TRACKING_URI" in line and "--no-track" in line, line
    assert "Read-only file system" in line, line


def test_a_damaged_cache_file_is_computed_again_and_replaced(tmp_path, monkeypatch):
    from facerecon.core import cache

    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(7)
    want = {"embeddings": rng.standard_normal((50, 16)), "images": np.arange(50)}
    calls = []

    def compute():
        calls.append(1)
        return {k: v.copy() for k, v in want.items()}

    cache.cached_arrays("neighbours", "tiny", "key", compute)
    (stored,) = (tmp_path / "neighbours").glob("*.npz")
    whole = stored.read_bytes()
    for damaged in (whole[: len(whole) // 2], b"", b"not a zip at all", whole[:-30]):
        stored.write_bytes(damaged)
        before = len(calls)
        with pytest.warns(UserWarning, match=f"{stored}.*computed again"):
            got = cache.cached_arrays("neighbours", "tiny", "key", compute)
        assert len(calls) == before + 1
        assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)
        with np.load(stored) as replaced:  # the file is whole again: read as numpy reads it
            assert all(np.array_equal(replaced[k], want[k]) for k in want)
    assert sorted(p.name for p in (tmp_path / "neighbours").iterdir()) == [stored.name]

    table = rng.standard_normal((8, 16)).astype(np.float32)
    cache.cached_array("attack", "tiny", "key", lambda: table)
    (single,) = (tmp_path / "attack").glob("*.npy")
    single.write_bytes(single.read_bytes()[:100])
    with pytest.warns(UserWarning, match="computed again"):
        got = cache.cached_array("attack", "tiny", "key", lambda: table.copy())
    assert np.array_equal(got, table) and np.array_equal(np.load(single), table)


LONG = {
    **SPEC,
    "solver": {"name": "adam", "steps": 10_000_000},
    "tracking": {"experiment": "faults", "image_every": 100_000, "images": "final"},
}


def _wait_for_metrics(client, names: set[str], procs, deadline: float) -> dict[str, str]:
    """{run name: run id} once every run named has logged its first distance."""
    experiment = None
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, p.stderr.read()[-3000:]
        experiment = experiment or client.get_experiment_by_name("faults")
        if experiment is not None:
            found = {
                r.info.run_name: r.info.run_id
                for r in client.search_runs([experiment.experiment_id])
                if "distance" in r.data.metrics
            }
            if names <= set(found):
                return found
        time.sleep(0.5)
    raise AssertionError("the runs did not start")


def test_a_killed_run_is_reported_stale_and_ended_by_runs_end_stale(tmp_path, store, monkeypatch):
    from facerecon.tracking import runs

    procs = {}
    for name in ("killed", "alive"):
        spec = {**LONG, "tracking": {**LONG["tracking"], "run_name": name}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", CHILD, "run", f"{name}.yaml"],
            cwd=tmp_path,
            env=_child_env(MLFLOW_TRACKING_URI=store, HEARTBEAT_SECONDS="0.5"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        client = MlflowClient(store)
        ids = _wait_for_metrics(client, set(procs), list(procs.values()), time.monotonic() + 180)
        procs["killed"].kill()  # kill -9: no hook, no handler runs
        procs["killed"].wait(timeout=30)
        bound = 8.0
        monkeypatch.setattr(runs, "STALE_SECONDS", bound, raising=False)
        time.sleep(bound + 2)  # both started longer ago than the bound; one still beats
        assert client.get_run(ids["killed"]).info.status == "RUNNING"  # as kill -9 left it

        made = api.report("faults", tmp_path / "report", log=False)
        status = {row["run"]: row["status"] for row in made.rows}
        assert status == {"killed": "stale", "alive": "RUNNING"}, status
        assert "stale" in (tmp_path / "report" / "table.md").read_text()

        listed = CliRunner().invoke(main, ["runs", "faults", "--stale-after", str(bound / 60)])
        assert listed.exit_code == 0, listed.output
        assert client.get_run(ids["killed"]).info.status == "RUNNING"  # listing ends nothing
        lines = {name: ln for ln in listed.output.splitlines() for name in ids if name in ln}
        assert "stale" in lines["killed"] and "stale" not in lines["alive"], listed.output

        ended = CliRunner().invoke(
            main, ["runs", "faults", "--end-stale", "--stale-after", str(bound / 60)]
        )
        assert ended.exit_code == 0, ended.output
        killed, alive = client.get_run(ids["killed"]), client.get_run(ids["alive"])
        assert killed.info.status == "KILLED" and killed.info.end_time is not None
        assert "stale" in killed.data.tags["facerecon.error"]
        assert alive.info.status == "RUNNING"
        assert procs["alive"].poll() is None  # and its process goes on
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
