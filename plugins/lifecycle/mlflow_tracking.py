"""``mlflow-tracking``: every run's spec, params, metrics and images, in MLflow.

Everything that talks to the store runs on one background thread, in the order it was
queued, so the solver loop never waits for it: the run is created there first (while the
main thread traces and compiles the first step), then metrics are written in batches and
step images are tiled, encoded and stored as they come. ``after_run`` waits for that queue,
then stores the final panels and ends the run, so a run is complete when ``api.run``
returns. While the run lives, a heartbeat tag is renewed from its own thread (queued on the
same worker), so a run whose process was killed can be told from one that is working.

When the store fails after the solve, the run is ended first, then the panels go to
``unsaved-runs/``; that fallback cannot raise, and a full disk leaves no half-written file
there or among the run's artifacts.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import facerecon
from facerecon import hookimpl
from facerecon.core.context import RunContext
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import StepInfo
from facerecon.core.spec import Spec
from facerecon.faces.panels import grid, labelled_grid
from facerecon.judges import scoring as judging
from facerecon.tracking import runs
from facerecon.tracking import store as tracking
from facerecon.tracking.store import flatten, git_commit, safe_name

#: (key, value, timestamp in ms, step): a metric as the loop records it; the worker makes
#: the MLflow entities, so the loop never imports mlflow (the worker may be importing it).
MetricRow = runs.MetricRow

#: Buffered metrics are written at least this often (and every 1000 rows), so the UI is at
#: most this far behind; every write costs MLflow a few ms whatever its size.
FLUSH_SECONDS = 5.0


@dataclass
class _Run:
    """One tracked run: its creation and every later write, queued on one worker thread."""

    pool: ThreadPoolExecutor
    #: resolves to (client, run_id); queued first, so every later task finds the run made
    created: Future
    pending: list[Future] = field(default_factory=list)
    last_images: StepInfo | None = None
    buffer: list[MetricRow] = field(default_factory=list)
    flushed_at: float = field(default_factory=time.monotonic)
    #: every step's batch means, for the loss-curve figure
    history: dict[str, list[float]] = field(default_factory=dict)
    tagged_images: bool = False
    #: the store's first failure: every later write fails at once with it, rather than
    #: each one spending MLflow's minutes of retries on a store that is gone
    broken: BaseException | None = None
    heartbeat: runs.Heartbeat | None = None

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        # Keep only what may still fail: a long run queues thousands of writes.
        self.pending = [f for f in self.pending if not f.done() or f.exception() is not None]
        future = self.pool.submit(self._guarded, fn, *args, **kwargs)
        self.pending.append(future)
        return future

    def _guarded(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.broken is not None:
            raise self.broken
        try:
            return fn(*args, **kwargs)
        except BaseException as error:
            # A full disk fails each write at once, with no retries to save: the metrics
            # (perhaps in a database on another disk) are still written.
            if tracking.no_space(error) is None:
                self.broken = error
            raise

    def beat(self) -> None:
        """Queue one renewal of the heartbeat tag (from the heartbeat's thread)."""
        if self.broken is None and self.created.done() and self.created.exception() is None:
            with suppress(RuntimeError):  # the worker has shut down: the run is ending
                self.pool.submit(self._write_beat)

    def _write_beat(self) -> None:
        client, run_id = self.run()
        client.set_tag(run_id, runs.HEARTBEAT_TAG, runs.heartbeat_now()[runs.HEARTBEAT_TAG])

    def close(self) -> None:
        """Stop the heartbeat and wait for the worker's last writes."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.pool.shutdown(wait=True)

    @classmethod
    def start(cls, create: Callable[..., tuple[Any, str]], *args: Any) -> _Run:
        """A worker thread whose first task, ``create(*args)``, makes the run, and the
        heartbeat that renews the run's tag."""
        state = cls(ThreadPoolExecutor(1, thread_name_prefix="mlflow-tracking"), Future())
        state.created = state.submit(create, *args)
        state.heartbeat = runs.Heartbeat(state.beat, runs.HEARTBEAT_SECONDS)
        return state

    def run(self) -> tuple[Any, str]:
        """(client, run_id); waits for the creation, re-raises its failure."""
        return self.created.result()

    def failed_to_start(self, wait: bool = False) -> BaseException | None:
        """The creation's failure if it has already failed; waits for it only if asked."""
        return self.created.exception() if wait or self.created.done() else None

    def flush(self) -> None:
        """Queue the buffered metrics as one write (MLflow takes up to 1000 per batch)."""
        rows, self.buffer = self.buffer, []
        self.flushed_at = time.monotonic()
        if rows:
            self.submit(self._write_metrics, rows)

    def _write_metrics(self, rows: list[MetricRow]) -> None:
        client, run_id = self.run()
        runs.log_metrics(client, run_id, rows)

    def log_step_image(self, images: np.ndarray, size: int, step: int) -> None:
        """Queue the batch's images (a copy the loop no longer changes) as image
        ``reconstruction`` at ``step``; tiling and encoding happen on the worker."""
        self.submit(self._write_step_image, images, size, step)

    def _write_step_image(self, images: np.ndarray, size: int, step: int) -> None:
        client, run_id = self.run()
        with tempfile.TemporaryDirectory() as tmp:
            _write_image_step_files(Path(tmp), "reconstruction", step, grid([list(images)], size))
            _log_artifacts(client, run_id, tmp, "images")
        if not self.tagged_images:  # what makes the UI show its image card
            client.set_tag(run_id, "mlflow.loggedImages", "True")
            self.tagged_images = True

    def drain(self) -> None:
        """Write what is buffered, wait for every queued write; re-raise the first failure."""
        self.flush()
        pending, self.pending = self.pending, []
        try:
            for future in pending:
                future.result()
        finally:
            self.close()


def _state(context: RunContext) -> _Run | None:
    return context.extras.get("_mlflow")


def _batch_means(terms: dict[str, np.ndarray]) -> dict[str, float]:
    """Each term's batch mean, logged every step under its plain key."""
    return {
        f"loss/{k}" if k not in ("distance", "cosine") else k: float(np.mean(v))
        for k, v in terms.items()
    }


def _with_images(context: RunContext, step: StepInfo) -> dict[str, float]:
    """What is logged only with the step images: the schedule's weights (a known function
    of the step) and, when the batch has several elements, each one's terms under
    ``key/label``. Logged every step, they were most of the rows MLflow inserts, and
    inserting rows is most of tracking's cost."""
    metrics = {f"weight/{label}": weight for label, weight in step.weights.items()}
    if len(context.elements) > 1:
        metrics.update(
            (f"{k}/{element.label}", float(value))
            for k, values in step.terms.items()
            for element, value in zip(context.elements, values, strict=True)
        )
    return metrics


def _client():
    import logging

    # "Creating initial MLflow database tables" is MLflow's business, not the user's; so are
    # the tracebacks it logs for a database error it then raises (a full disk's), which
    # this plugin turns into one line.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    return tracking.client()


def _create_run(spec: Spec, tags: dict[str, str], context: RunContext) -> tuple[Any, str]:
    """On the worker: the client (importing mlflow, checking the store's schema), the run,
    its spec and params. The first run of a process spends most of its tracking start-up
    here, hidden behind the main thread's tracing of the first step."""

    settings = spec.tracking
    client = _client()
    tags["mlflow.user"] = tracking.account()
    tags |= runs.heartbeat_now()
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = commit
    exp_id = runs.experiment_id(client, settings.experiment)
    run_id = client.create_run(
        exp_id,
        start_time=int(context.started * 1000),  # not now: this worker starts late
        run_name=settings.run_name or spec.name,
        tags=tags,
    )
    run_id = run_id.info.run_id
    # Other plugins may look for the run while the loop runs; after_run guarantees it.
    context.run_id = run_id
    resolved = spec.resolved()
    client.log_dict(run_id, resolved, "spec.yaml")
    runs.log_params(client, run_id, {k: v[:6000] for k, v in flatten(resolved).items()})
    return client, run_id


@hookimpl
def before_run(context: RunContext) -> None:
    spec = context.spec
    if not spec.tracking.enabled:
        return
    tags = {
        "facerecon.model": spec.model.name,
        "facerecon.solver": spec.solver.name,
        "facerecon.metric": spec.loss.metric.name,
        "facerecon.regularizers": ",".join(context.labels) or "none",
        "facerecon.seed": str(spec.seed),
        "facerecon.version": facerecon.__version__,
        "facerecon.spec": spec.name,
    }
    if spec.tracking.parent_run_id:
        tags["mlflow.parentRunId"] = spec.tracking.parent_run_id
    if notes := context.target_faces:
        tags["facerecon.target_faces"] = "; ".join(notes)[:5000]  # MLflow's tag value limit
    tags |= {f"facerecon.terms.{kind}": text for kind, text in context.weights_terms.items()}
    context.extras["_mlflow"] = _Run.start(_create_run, spec, tags, context)


@hookimpl
def after_step(context: RunContext, step: StepInfo) -> None:
    state = _state(context)
    if state is None:
        return
    # No store, or one that refuses this account: stop now rather than after the run. The
    # first step waits for the run's creation (it has had the step's tracing to finish).
    if error := state.failed_to_start(wait=step.step == 0):
        raise (
            tracking.refused(error, context.spec.tracking.experiment)
            or _full(context, error)
            or error
        )
    now = int(time.time() * 1000)
    metrics = _batch_means(step.terms)
    for key, value in metrics.items():
        state.history.setdefault(key, []).append(value)
    metrics.update(step.metrics)
    image_step = step.step % context.spec.tracking.image_every == 0
    if image_step:
        metrics.update(_with_images(context, step))
    state.buffer += [(k, v, now, step.step) for k, v in metrics.items()]
    state.last_images = step
    if image_step and context.spec.tracking.images == "all":
        state.log_step_image(step.images_numpy(), context.model.input_size, step.step)
    if len(state.buffer) >= 1000 or time.monotonic() - state.flushed_at >= FLUSH_SECONDS:
        state.flush()


@contextmanager
def _whole(path: Path) -> Iterator[Path]:
    """A name beside ``path`` to write to, renamed to ``path`` once written and removed if
    the write fails: a full disk leaves no empty or half-written file."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        yield partial
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _save_png(path: Path, image: np.ndarray) -> None:
    """PNG at zlib level 1: a quarter of the default level's time for a 7% larger file."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with _whole(path) as partial:
        Image.fromarray(image).save(partial, format="PNG", compress_level=1)


def _write_image_step_files(folder: Path, key: str, step: int, image: np.ndarray) -> None:
    """The two files ``MlflowClient.log_image(image, key=key, step=step)`` writes under
    ``images/`` (the UI's step slider finds them by these names), encoded cheaply: log_image
    takes about 25 ms per image at PIL's default settings, this about 6 ms."""
    import uuid

    from PIL import Image

    picture = Image.fromarray(image)
    stem = f"{key}+step+{step}+timestamp+{int(time.time() * 1000)}+{uuid.uuid4()}"
    _save_png(folder / f"{stem}.png", image)
    # MLflow's thumbnail: the longer side scaled to 256 px, as WebP; method 0 is its
    # fastest encoder (a third of the default's time).
    scale = 256 / max(picture.size)
    thumbnail = picture.resize((round(picture.width * scale), round(picture.height * scale)))
    with _whole(folder / f"{stem}+compressed.webp") as partial:
        thumbnail.save(partial, format="WEBP", method=0)


def _log_artifacts(client: Any, run_id: str, folder: str, path: str | None = None) -> None:
    """``client.log_artifacts``; when it fails with a full disk, the copies it left half
    made in a local artifact store are removed (the UI would show them as broken images)."""
    try:
        client.log_artifacts(run_id, folder, path)
    except Exception as error:
        if tracking.no_space(error) is not None:
            with suppress(Exception):
                _remove_partial_copies(client.get_run(run_id).info.artifact_uri, folder, path)
        raise


def _remove_partial_copies(artifact_uri: str, folder: str, path: str | None) -> None:
    """Remove the files under ``artifact_uri``/``path`` whose size differs from their
    source's in ``folder`` (local artifact stores only)."""
    import urllib.parse

    parsed = urllib.parse.urlsplit(artifact_uri)
    if parsed.scheme not in ("", "file"):
        return
    root = Path(urllib.parse.unquote(parsed.path), path or "")
    for source in Path(folder).rglob("*"):
        copy = root / source.relative_to(folder)
        if source.is_file() and copy.is_file() and copy.stat().st_size != source.stat().st_size:
            copy.unlink()


def _loss_figure(history: dict[str, list[float]], title: str):
    """``plots/loss.png``: every term's batch mean and the distance against the step."""
    from matplotlib.figure import Figure  # no pyplot: no global figure registry
    from matplotlib.ticker import NullLocator

    # cosine is not a loss: it has its own scale, and MLflow charts it
    curves = {k: np.asarray(v, float) for k, v in history.items() if k != "cosine"}
    fig = Figure(figsize=(6, 3.5), dpi=72)
    fig.subplots_adjust(bottom=0.15)
    ax = fig.add_subplot(title=title, xlabel="step")
    # A diverged run's NaN and infinite values are left out (matplotlib cannot scale an
    # axis to them); the curve stops where the run diverged.
    finite = {k: v[np.isfinite(v)] for k, v in curves.items()}
    curves = {k: v for k, v in curves.items() if finite[k].size}
    finite = {k: finite[k] for k in curves}
    for key, values in curves.items():
        steps = np.arange(len(values))
        keep = np.isfinite(values)
        ax.plot(steps[keep], values[keep], label=key, linewidth=1)
    if not curves:
        return fig
    if all(v.min() > 0 for v in finite.values()):
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())  # a fifth of the figure's drawing time
        # a term that starts at zero (the guide's, from the guide) would squash the rest
        ax.set_ylim(bottom=min(np.percentile(v, 5) for v in finite.values()) / 2)
    else:  # the dot product's loss is negative
        ax.set_yscale("symlog")
    ax.legend(fontsize=8)
    return fig


def _write_panels(folder: Path, state: _Run, context: RunContext, faces: bool = True) -> None:
    """``plots/loss.png`` and, with ``faces``, ``final.png`` (target, guide, kept image per
    row), ``candidates.png`` and ``kept/target_<t>.png``, into ``folder``."""
    result = context.result
    size = context.model.input_size
    (folder / "plots").mkdir(exist_ok=True)
    with _whole(folder / "plots" / "loss.png") as partial:
        _loss_figure(state.history, context.spec.name).savefig(
            partial, format="png", pil_kwargs={"compress_level": 1}
        )
    if not faces:
        return
    rows = []
    for target, index in enumerate(result.best):
        guide = context.elements[index].guide
        rows.append(
            [
                context.target_images[target],
                None if guide is None else context.guide_images[guide],
                result.images[index],
            ]
        )
    _save_png(folder / "final.png", grid(rows, size))
    if len(result.images) > len(result.best):
        _save_png(folder / "candidates.png", grid([[im] for im in result.images], size))
    for target, index in enumerate(result.best):  # for reports: the kept image alone
        _save_png(
            folder / "kept" / f"target_{target}.png",
            grid([[result.images[index]]], size, gap=0),
        )
        if result.frames is not None:  # and the whole picture the chip was cut from
            frame = grid([[result.frames[index]]], len(result.frames[index]), gap=0)
            _save_png(folder / "frames" / f"target_{target}.png", frame)


def _finish(state: _Run, context: RunContext) -> None:
    """Store the final panels, table and metrics, then end the run: FINISHED, or FAILED
    with the reason when it diverged."""
    result = context.result
    size = context.model.input_size
    last = state.last_images
    if last is not None and last.step % context.spec.tracking.image_every:
        now = int(time.time() * 1000)
        state.buffer += [(k, v, now, last.step) for k, v in _with_images(context, last).items()]
    images = context.spec.tracking.images
    if (result.steps - 1) % context.spec.tracking.image_every and images == "all":
        state.log_step_image(result.images, size, result.steps - 1)
    state.flush()
    with tempfile.TemporaryDirectory() as tmp:
        # The panels and the loss curves are drawn while the worker finishes the queued
        # writes.
        _write_panels(Path(tmp), state, context, faces=images != "none")
        state.drain()
        client, run_id = state.run()
        _log_artifacts(client, run_id, tmp)
    judged = dict(zip(result.best, result.judges, strict=False))
    table = {
        "candidate": [e.label for e in context.elements],
        **{k: [float(x) for x in v] for k, v in result.terms.items()},
        "kept": [i in result.best for i in range(len(context.elements))],
        # the judges score kept candidates only; JSON text keeps the nested lists
        "judges": [json.dumps(judged.get(i, {})) for i in range(len(context.elements))],
    }
    client.log_table(run_id, table, artifact_file="candidates.json")
    best = result.best
    final = {
        f"final/{key}": float(np.mean(result.terms[key][best])) for key in ("distance", "cosine")
    }
    # per target t: judge/<model>/<score>/t<t>, and over targets, the mean without suffix
    flats = [judging.flat(scores) for scores in result.judges]
    for key, mean in judging.means(result.judges).items():
        final[key] = mean
        if len(flats) > 1:
            final |= {f"{key}/t{t}": f[key] for t, f in enumerate(flats) if key in f}
    tags = {"facerecon.stop_reason": result.stop_reason}
    if failure := result.failure:
        tags["facerecon.error"] = failure
    runs.log_metrics(client, run_id, runs.rows(final), tags)
    client.set_terminated(run_id, "FAILED" if failure else "FINISHED")


def _save_locally(
    state: _Run, context: RunContext, error: BaseException, not_ended: str | None = None
) -> FaceReconError:
    """The store failed after the solve: write the panels to ``unsaved-runs/`` instead, and
    return the one-line error that says where, or that nothing could be kept. Never raises:
    whatever this fails at (a full disk) is said in the line, and leaves no partial file.
    ``not_ended`` is why the run could not be ended in the store, if it could not."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = (Path("unsaved-runs") / f"{safe_name(context.spec.name)}-{stamp}").absolute()
    local: Exception | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            _write_panels(folder, state, context)
        except Exception:  # what failed may be the drawing: the kept images alone, then
            result, size = context.result, context.model.input_size
            for target, index in enumerate(result.best):
                image = grid([[result.images[index]]], size)
                _save_png(folder / "kept" / f"target_{target}.png", image)
    except Exception as failed:
        local = failed
    kept = _prune(folder)
    return FaceReconError(_lost_line(context, error, local, folder if kept else None, not_ended))


def _prune(folder: Path) -> bool:
    """Remove the folders under ``folder`` (and itself) that a failed write left empty;
    whether any file is left."""
    with suppress(OSError):
        for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        if not any(folder.iterdir()):
            folder.rmdir()
            with suppress(OSError):
                folder.parent.rmdir()  # unsaved-runs/ itself, when nothing else is kept there
    return folder.is_dir()


def _why(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:300]


def _lost_line(
    context: RunContext,
    error: BaseException,
    local: BaseException | None,
    folder: Path | None,
    not_ended: str | None,
) -> str:
    """The one line for a run whose store failed after the solve."""
    name = context.spec.name
    full = tracking.no_space(error) or tracking.no_space(local)
    head = (
        f"{name}: no space left on {full}"
        if full
        else f"{name}: the run could not be stored in MLflow ({_why(error)})"
    )
    run_id = context.run_id
    if run_id is None:
        ended = ""
    elif not_ended is None:
        ended = f"; its MLflow run {run_id} is ended FAILED"
    else:
        ended = (
            f"; its MLflow run {run_id} could not be ended ({not_ended}): `facerecon runs "
            "--end-stale` ends it later"
        )
    if folder is None and full:
        where = "; none of its images could be kept"
    elif folder is None:
        where = f"; its images could not be kept either ({_why(local)})" if local else ""
    elif local is not None:
        where = f"; the images written before the failure are in {folder}"
    else:
        where = f"; its images are in {folder}"
    again = "; free some space and run it again" if full else ""
    return head + ended + where + again


@hookimpl(wrapper=True)
def after_run(context: RunContext) -> Generator[None, Any, Any]:
    state = _state(context)
    if state is None:
        return (yield)
    try:
        # Other after_run hooks (e.g. feedforward's, which logs the generator) use the
        # run, and RunResult.run_id names it: wait for its creation before any of them.
        _, run_id = state.run()
    except Exception as error:  # no store: the solve is done, keep its images here
        not_ended = _end(state, context, error)  # a run made before the creation failed
        raise _save_locally(state, context, error, not_ended) from error
    context.run_id = context.result.run_id = run_id
    try:
        outcome = yield
    except BaseException as error:  # another after_run hook failed
        _end(state, context, error)
        raise
    try:
        _finish(state, context)
    except Exception as error:
        # The store, or the disk, failed: one quick try to end the run, no more writes;
        # and the run is ended before anything else is tried, so it is never left RUNNING.
        state.broken = state.broken or error
        not_ended = _end(state, context, error)
        raise _save_locally(state, context, error, not_ended) from error
    return outcome


@hookimpl
def on_error(context: RunContext, error: BaseException) -> None:
    state = _state(context)
    if state is not None:
        _end(state, context, error)  # the run's own error is the one to tell


def _end(state: _Run, context: RunContext, error: BaseException) -> str | None:
    """Keep what the run made so far, and end it FAILED (KILLED on Ctrl-C) with the reason;
    never raises: None once ended (or when there is no run), else why it could not be."""
    reason = f"{type(error).__name__}: {error}"[:5000]
    status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
    if state.created.exception() is not None:  # waits for the creation
        state.close()
        if context.run_id is None:  # no run, nothing to end
            return None
        # made, but what followed (its spec, its params) failed: end it all the same
        return _tag_and_end(tracking.client, context.run_id, reason, status, quick=True)
    client, run_id = state.run()
    context.run_id = run_id
    quick = state.broken is not None
    try:
        if not quick:
            state.drain()
            if state.last_images is not None and context.spec.tracking.images != "none":
                images = state.last_images.images_numpy()
                client.log_image(
                    run_id,
                    grid([list(images)], context.model.input_size),
                    artifact_file="last.png",
                )
    except Exception as failed:  # e.g. a full disk: the run is ended all the same
        state.broken, quick = failed, True
    finally:  # a second Ctrl-C while the writes finish still ends the run
        state.close()
        not_ended = _tag_and_end(lambda: client, run_id, reason, status, quick=quick)
    return not_ended


def _tag_and_end(
    client: Callable[[], Any], run_id: str, reason: str, status: str, quick: bool
) -> str | None:
    """Tag the run's error and end it (``quick``: one try without MLflow's retries, on a
    store that failed); None once ended, else the store's error."""
    try:
        with _quick_requests() if quick else nullcontext():
            made = client()
            made.set_tag(run_id, "facerecon.error", reason)
            made.set_terminated(run_id, status)
    except Exception as failed:
        return _why(failed)
    return None


def _full(context: RunContext, error: BaseException) -> FaceReconError | None:
    """The one line for a run whose start met a full disk; None for other errors."""
    full = tracking.no_space(error)
    if full is None:
        return None
    return FaceReconError(
        f"{context.spec.name}: no space left on {full}; free some space and run it again"
    )


@contextmanager
def _quick_requests() -> Generator[None, None, None]:
    """MLflow's HTTP client without its retries (minutes, on a server that is gone) and
    with a short timeout; MLflow reads these variables at every request."""
    import os

    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    saved = {key: os.environ.get(key) for key in quick}
    os.environ.update(quick)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@hookimpl
def before_sweep(sweep) -> None:
    tracking_spec = sweep.spec.tracking
    if not tracking_spec.enabled:
        return
    client = _client()
    tags = {
        "facerecon.spec": sweep.spec.name,
        "facerecon.sweep": str(len(sweep.variants)),
        "facerecon.version": facerecon.__version__,
        "mlflow.user": tracking.account(),
        **runs.heartbeat_now(),
        **sweep.tags,
    }
    if resumed := sweep.run_id:  # the sweep goes on in its old run
        client.update_run(resumed, status="RUNNING")
        client.set_tag(resumed, "facerecon.sweep", tags["facerecon.sweep"])
        client.set_tag(resumed, runs.HEARTBEAT_TAG, tags[runs.HEARTBEAT_TAG])
    else:
        try:
            exp_id = runs.experiment_id(client, tracking_spec.experiment)
            run = client.create_run(exp_id, run_name=f"{sweep.spec.name} (sweep)", tags=tags)
        except Exception as error:  # the server refuses this account: one line, no variants
            raise tracking.refused(error, tracking_spec.experiment) or error from None
        sweep.run_id = run.info.run_id
        client.log_dict(run.info.run_id, sweep.spec.resolved(), "spec.yaml")
    run_id = sweep.run_id

    def beat() -> None:  # the parent's own: its variants beat in their workers
        client.set_tag(run_id, runs.HEARTBEAT_TAG, runs.heartbeat_now()[runs.HEARTBEAT_TAG])

    sweep.extras["_mlflow_heartbeat"] = runs.Heartbeat(beat, runs.HEARTBEAT_SECONDS)


def _settle_children(client, sweep, parent: str) -> None:
    """Give outcomes their run ids, and end child runs their worker left RUNNING (killed,
    crashed): KILLED when the sweep was interrupted, FAILED otherwise."""
    experiment = client.get_run(parent).info.experiment_id
    children, token = [], None
    while True:  # paged: a sweep may have more children than one page holds
        page = client.search_runs(
            [experiment], f"tags.mlflow.parentRunId = '{parent}'", page_token=token
        )
        children += page
        if not (token := page.token):
            break
    by_name = {run.info.run_name: run.info.run_id for run in children}
    for outcome in sweep.outcomes:
        if outcome.run_id is None:
            outcome.run_id = by_name.get(f"{sweep.spec.name} [{outcome.name}]")
    status = "KILLED" if isinstance(sweep.error, KeyboardInterrupt) else "FAILED"
    for run in children:
        if run.info.status == "RUNNING":
            client.set_tag(
                run.info.run_id, "facerecon.error", "its worker stopped before ending the run"
            )
            client.set_terminated(run.info.run_id, status)


def _sheet_label(outcome) -> str:
    """A contact-sheet row label: the variant, and its judges' identity scores."""
    scores = [
        f"{key.split('/')[1]} {'I' if key.endswith('type1') else 'II'} {value:.2f}"
        for key, value in outcome.judges.items()
        if key.endswith(("/type1", "/type2_mean"))
    ]
    return "\n".join([outcome.name, *scores])


@hookimpl
def after_sweep(sweep) -> None:
    run_id = sweep.run_id
    if run_id is None:
        return
    if heartbeat := sweep.extras.pop("_mlflow_heartbeat", None):
        heartbeat.stop()
    import matplotlib.pyplot as plt

    client = _client()
    outcomes = sweep.outcomes
    try:
        _settle_children(client, sweep, run_id)
        if outcomes:
            table = {
                "variant": [o.name for o in outcomes],
                "status": [o.status for o in outcomes],
                "run_id": [o.run_id or "" for o in outcomes],
                "distance": [o.distance for o in outcomes],
                "cosine": [o.cosine for o in outcomes],
                **{
                    key: [o.judges.get(key) for o in outcomes]
                    for key in dict.fromkeys(k for o in outcomes for k in o.judges)
                },
                "seconds": [o.seconds for o in outcomes],
                "worker": [o.worker or "" for o in outcomes],
                "built_model": [o.built_model for o in outcomes],
                "error": [o.error or "" for o in outcomes],
            }
            client.log_table(run_id, table, artifact_file="summary.json")
        if outcomes and sweep.spec.tracking.images != "none":
            fig = labelled_grid(
                [(_sheet_label(o), o.images or o.status) for o in outcomes],
                [f"target {t}" for t in range(max(len(o.images) for o in outcomes) or 1)],
            )
            client.log_figure(run_id, fig, "contact_sheet.png")
            plt.close(fig)
        client.set_tag(run_id, "facerecon.executor", sweep.executor)
        for status in ("FAILED", "KILLED"):
            names = [o.name for o in outcomes if o.status == status]
            client.set_tag(
                run_id, f"facerecon.{status.lower()}_variants", "; ".join(names) or "none"
            )
    finally:
        if sweep.error is not None:
            client.set_tag(
                run_id, "facerecon.error", f"{type(sweep.error).__name__}: {sweep.error}"[:5000]
            )
            status = "KILLED" if isinstance(sweep.error, KeyboardInterrupt) else "FAILED"
        else:
            status = "FINISHED"
        client.set_terminated(run_id, status)
