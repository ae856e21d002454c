"""The ``facerecon`` command line: a thin shell over :mod:`facerecon.api`."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter

import click
from rich.console import Console
from rich.markup import escape

from facerecon.core.errors import FaceReconError

err = Console(stderr=True, emoji=False, highlight=False)


def out() -> Console:
    """Standard output, sized to the terminal at the time of the call."""
    return Console(emoji=False)


def _warn(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(f"[yellow]warning:[/] {escape(str(message))}", soft_wrap=True)


warnings.showwarning = _warn


def _friendly(fn: Callable) -> Callable:
    """Turn user errors into one red line each and a non-zero exit, never a traceback."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FaceReconError as exc:
            for line in exc.lines:
                err.print(f"[red]error:[/] {escape(line)}", soft_wrap=True)
            sys.exit(1)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            sys.exit(130)
        except OSError as exc:  # a full disk wherever it is met: one line, not a traceback
            from facerecon.tracking.store import no_space

            if (full := no_space(exc)) is None:
                raise
            err.print(f"[red]error:[/] no space left on {escape(full)} ({escape(str(exc))})")
            sys.exit(1)

    return wrapper


def _start_tensorflow_quietly() -> None:
    """Import TensorFlow and initialise its devices with C++ stderr muted.

    TensorFlow's CUDA probe writes to file descriptor 2 from C++ on every CPU-only start,
    past TF_CPP_MIN_LOG_LEVEL; Python errors still surface after stderr is restored.
    """
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_logical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@click.group()
@click.version_option(package_name="facerecon")
@click.pass_context
def main(ctx: click.Context) -> None:
    """facerecon: turn face-recognition embeddings back into face images."""
    if ctx.invoked_subcommand not in ("ui", "runs"):  # these only read the store: no TensorFlow
        _start_tensorflow_quietly()


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path())
@click.option("--no-track", is_flag=True, help="Do not log to MLflow.")
@_friendly
def run(specs: tuple[str, ...], no_track: bool) -> None:
    """Validate every SPEC, then run them one after the other (sweeps as sweeps)."""
    from facerecon import api
    from facerecon.engine.sweep import expand

    validated = api.validate(*specs)
    for spec in validated:
        if spec.sweep is not None:
            expand(spec)  # every variant of every spec is checked before anything runs
    for spec in validated:
        _run_reported(spec, False if no_track else None)


def _run_reported(spec, track: bool | None, **sweep_options) -> None:
    from facerecon import api
    from facerecon.console import ConsoleReporter, SweepReporter

    pm = api.plugin_manager()
    reporters = [ConsoleReporter(err), SweepReporter(err)]
    for reporter in reporters:
        pm.register(reporter)
    err.print(
        f"{escape(spec.name)}: loading {spec.model.name}, targets and guides ...", soft_wrap=True
    )
    try:
        if spec.sweep is None:
            api.run(spec, pm=pm, track=track)
        else:
            api.sweep(spec, pm=pm, track=track, **sweep_options)
    finally:
        for reporter in reporters:
            pm.unregister(reporter)


@main.command()
@click.argument("spec", type=click.Path())
@click.option("--workers", type=click.IntRange(1, 64), help="Local worker processes.")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where variants run: local processes, or one Ray task each.",
)
@click.option("--address", help="Ray cluster address (ray executor; default: a local runtime).")
@click.option("--variant", "variants", multiple=True, help="Run only this variant (repeatable).")
@click.option("--no-track", is_flag=True, help="Do not log to MLflow.")
@_friendly
def sweep(
    spec: str,
    workers: int | None,
    executor: str,
    address: str | None,
    variants: tuple[str, ...],
    no_track: bool,
) -> None:
    """Run every variant of SPEC's `sweep` section as child runs of one MLflow run."""
    from facerecon import api
    from facerecon.engine.sweep import expand, select

    (validated,) = api.validate(spec)
    if validated.sweep is None:
        raise FaceReconError(f"{spec}: no `sweep` section; use `facerecon run` for one run")
    select(expand(validated), variants)  # an unknown --variant before anything loads
    _run_reported(
        validated,
        False if no_track else None,
        workers=workers,
        executor=executor,
        address=address,
        only=variants,
    )


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path())
@_friendly
def validate(specs: tuple[str, ...]) -> None:
    """Check SPEC files (every sweep variant too) without running anything."""
    from facerecon import api
    from facerecon.engine.sweep import expand

    for spec, path in zip(api.validate(*specs), specs, strict=True):
        variants = f", {len(expand(spec))} sweep variants" if spec.sweep else ""
        out().print(f"[green]ok[/] {escape(path)} ({escape(spec.name)}{variants})")


@main.command()
@click.argument("experiment")
@click.option("-o", "--output", type=click.Path(), help="Folder [default: reports/EXPERIMENT].")
@click.option("--no-log", is_flag=True, help="Do not log the report to MLflow.")
@_friendly
def report(experiment: str, output: str | None, no_log: bool) -> None:
    """Gather EXPERIMENT's runs into a labelled figure and a table."""
    from rich.markdown import Markdown

    from facerecon import api

    made = api.report(experiment, output, log=not no_log)
    out().print(Markdown((made.folder / "table.md").read_text()))
    err.print(
        f"figure and table in {made.folder}/"
        + (f"; MLflow run {made.run_id}" if made.run_id else "")
    )


@main.command()
@click.argument("experiments", nargs=-1)
@click.option("--end-stale", is_flag=True, help="End the stale runs as KILLED, with the reason.")
@click.option(
    "--stale-after",
    type=click.FloatRange(min=0, min_open=True),
    metavar="MINUTES",
    help="A RUNNING run with no heartbeat for this long is stale [default: 10].",
)
@_friendly
def runs(experiments: tuple[str, ...], end_stale: bool, stale_after: float | None) -> None:
    """List the RUNNING runs of EXPERIMENTS (default: all) and which are stale: their
    process no longer renews their heartbeat (killed, or its machine went down)."""
    import time

    from facerecon.tracking import runs as tracked
    from facerecon.tracking.store import client

    bound = tracked.STALE_SECONDS if stale_after is None else stale_after * 60
    store = client()
    found = [store.get_experiment_by_name(name) for name in experiments]
    if missing := [name for name, e in zip(experiments, found, strict=True) if e is None]:
        raise FaceReconError(f"no experiment {', '.join(map(repr, missing))} in the store")
    chosen = found if experiments else store.search_experiments()
    names = {e.experiment_id: e.name for e in chosen}
    running = tracked.running(store, list(names)) if names else []
    stale = [run for run in running if tracked.is_stale(run, bound)]
    stale_ids = {run.info.run_id for run in stale}
    now = time.time()
    for run in running:
        quiet = tracked.ago(now - tracked.last_sign_of_life(run))
        seen = "heartbeat" if tracked.HEARTBEAT_TAG in run.data.tags else "started (no heartbeat)"
        mark = "stale" if run.info.run_id in stale_ids else "ok"
        out().print(
            f"{mark:5}  {escape(names[run.info.experiment_id])} / "
            f"{escape(run.info.run_name or '')} {run.info.run_id}: {seen} {quiet} ago",
            soft_wrap=True,
        )
    if end_stale:
        ended = tracked.end_stale(store, stale, bound)
        err.print(f"{len(ended)} stale run(s) ended as KILLED")
    else:
        err.print(
            f"{len(running)} running, {len(stale)} stale (no sign of life for more than "
            f"{tracked.ago(bound)})" + ("; end them with --end-stale" if stale else "")
        )


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--no-log", is_flag=True, help="Do not log the scores to the evaluation's run.")
@_friendly
def lineup(folder: str, no_log: bool) -> None:
    """Score the blind line-ups in FOLDER (an evaluation's lineup/): each answers/*.json
    against key.json, with the chance of as many matches by guessing."""
    from facerecon import api, console

    rows, run_id = api.lineup(folder, log=not no_log)
    out().print(console.lineup_table(rows))
    err.print(
        f"scores.md and scores.json in {folder}/"
        + (f"; logged to MLflow run {run_id}" if run_id else "")
    )


@main.command()
@_friendly
def plugins() -> None:
    """List every plugin: kind, name, package, parameters, doc."""
    from facerecon import api, console

    out().print(console.plugins_table(api.plugins()))


def _model_options(fn: Callable) -> Callable:
    """``--model NAME`` and the repeatable ``--model-param KEY=VALUE`` of a command."""
    fn = click.option(
        "--model-param",
        "model_params",
        multiple=True,
        metavar="KEY=VALUE",
        help="A parameter of the model, VALUE read as YAML (112, [1, 2, 3], bgr); repeatable.",
    )(fn)
    return click.option("--model", "model_option", metavar="NAME", help="The face model.")(fn)


def _model_choice(
    positional: str | None, option: str | None, default: str | None = "dlib-resnet"
) -> str:
    """The model a command names, as its MODEL argument or with ``--model`` (or both, alike)."""
    if positional and option and positional != option:
        raise FaceReconError(f"two models named, {positional!r} and --model {option!r}; give one")
    name = positional or option or default
    if name is None:
        raise FaceReconError("name the model: MODEL, or --model NAME")
    return name


def _model_params(pairs: tuple[str, ...]) -> dict[str, object]:
    """``--model-param KEY=VALUE`` pairs as the model's parameters, each value read as a YAML
    value (safely, like a spec's), so that numbers and lists arrive as numbers and lists."""
    import yaml

    from facerecon.engine.validation import OutOfProportion, UniqueKeyLoader, shown

    params: dict[str, object] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        key = key.strip()
        if not equals or not key:
            raise FaceReconError(f"--model-param {shown(pair)}: give KEY=VALUE (path=face.onnx)")
        if key == "name":
            raise FaceReconError("--model-param name: the model is named by --model")
        if key in params:
            raise FaceReconError(f"--model-param {shown(key)}: given twice")
        try:
            params[key] = yaml.load(text, Loader=UniqueKeyLoader)
        except (yaml.YAMLError, OutOfProportion, RecursionError, ValueError) as exc:
            problem = getattr(exc, "problem", None) or str(exc).partition("\n")[0]
            raise FaceReconError(
                f"model.{key}: not a usable YAML value {shown(text)}: {problem or 'unreadable'}"
            ) from None
    return params


@main.command()
@click.argument("model", required=False)
@_model_options
@_friendly
def layers(model: str | None, model_option: str | None, model_params: tuple[str, ...]) -> None:
    """List the layers of MODEL (default dlib-resnet) that regularizers can tap, with their
    shapes."""
    from facerecon import api, console

    name = _model_choice(model, model_option)
    out().print(console.layers_table(name, api.layers(name, **_model_params(model_params))))


@main.command()
@click.argument("photo", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Where to write the .npy.")
@_model_options
@click.option("--no-align", is_flag=True, help="The photo is already a tight face crop.")
@_friendly
def embed(
    photo: str,
    output: str,
    model_option: str | None,
    model_params: tuple[str, ...],
    no_align: bool,
) -> None:
    """Write the embedding of the face in PHOTO by --model (default dlib-resnet) to an .npy
    file."""
    from facerecon import api

    embedding, note = api.embed(
        photo,
        output,
        model_name=_model_choice(None, model_option),
        align=not no_align,
        model_params=_model_params(model_params),
    )
    err.print(
        f"{photo}: {note}; {embedding.shape[0]}-d embedding, norm "
        f"{float((embedding**2).sum() ** 0.5):.4f} -> {output}"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@_friendly
def ui(host: str, port: int) -> None:
    """Serve the MLflow UI on the run store."""
    from facerecon.tracking.store import experiment_urls, serve_ui  # not api: that imports TF

    base = f"http://{host}:{port}"
    err.print(f"MLflow UI on {base} (Ctrl-C to stop); experiments, in the model-training view:")
    for name, url in experiment_urls(base):
        err.print(f"  {escape(name)}: {url}", soft_wrap=True)
    sys.exit(serve_ui(host, port))


@main.command()
@click.option(
    "-g",
    "--generator",
    required=True,
    help="MLflow model URI (runs:/RUN/generator), a model folder, or builtin:NAME (shipped).",
)
@click.option("--embedding", type=click.Path(), help="An .npy of one (D,) or many (N, D).")
@click.option("--photo", type=click.Path(), help="Or a photo whose face is embedded first.")
@click.option("--guide", help="The guide image (guided generators only).")
@click.option("--no-align", is_flag=True, help="Photo and guide are already tight face crops.")
@click.option(
    "-o", "--output", required=True, type=click.Path(), help="Image; NAME-000.png... for N."
)
@click.option("--batch", default=32, show_default=True, type=click.IntRange(1))
@_friendly
def generate(
    generator: str,
    embedding: str | None,
    photo: str | None,
    guide: str | None,
    no_align: bool,
    output: str,
    batch: int,
) -> None:
    """Reconstruct faces in one pass with a trained feed-forward generator."""
    from facerecon import api

    made = api.generate(
        generator,
        embedding,
        photo=photo,
        guide=guide,
        align=not no_align,
        output=output,
        batch=batch,
    )
    where = made.paths[0] if len(made.paths) == 1 else f"{made.paths[0]} ... {made.paths[-1]}"
    err.print(
        f"{len(made.images)} image(s) in {made.seconds:.3f} s "
        f"({made.images_per_second:.1f} images/s at batch {batch}) -> {where}",
        soft_wrap=True,
    )


@main.command()
@click.argument("spec", type=click.Path())
@click.option(
    "-g",
    "--generator",
    "generators",
    multiple=True,
    help="MLflow model URI of a generator; repeat to compare several.",
)
@click.option("--no-iterative", is_flag=True, help="Skip the iterative solver (generators only).")
@click.option("--threshold", default=0.6, show_default=True, help="Verification distance.")
@click.option(
    "--collection",
    "collections",
    multiple=True,
    help="Attack evaluation on this labelled collection: a folder with one subfolder per "
    "person (LFW style) or a labelled built-in (builtin:radar, builtin:obama, ...); repeat "
    "to merge.",
)
@click.option("--pairs", type=click.Path(exists=True), help="LFW's pairs.txt for --collection.")
@click.option("--identities", type=click.IntRange(1), help="Attack at most N people.")
@click.option("--guide", help="The guide image (a tight crop) for guided generators.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), help="Local worker processes.")
@click.option("--address", help="Ray cluster address (ray executor).")
@click.option("-o", "--output", type=click.Path(), help="Folder for the attack report.")
@click.option("--no-track", is_flag=True, help="Do not log to MLflow.")
@_friendly
def evaluate(
    spec: str,
    generators: tuple[str, ...],
    no_iterative: bool,
    threshold: float,
    collections: tuple[str, ...],
    pairs: str | None,
    identities: int | None,
    guide: str | None,
    executor: str,
    workers: int | None,
    address: str | None,
    output: str | None,
    no_track: bool,
) -> None:
    """Score generators against SPEC's iterative solver on SPEC's held-out targets; with
    --collection, attack SPEC's model on a labelled collection, judged at fixed false-match
    rates (SAR, type I and II, white-box and transfer)."""
    from facerecon import api, console
    from facerecon.console import ConsoleReporter

    if collections:
        options = {"pairs": pairs, "identities": identities, "generators": generators,
                   "guide": guide, "iterative": not no_iterative, "executor": executor,
                   "workers": workers, "address": address, "output": output}  # fmt: skip
        _attack(spec, list(collections), no_track, options)
        return
    if pairs or identities or guide:
        raise FaceReconError("--pairs, --identities and --guide need --collection")
    if not generators:
        raise FaceReconError("give --generator (one or more), or --collection for an attack")
    pm = api.plugin_manager()
    reporter = ConsoleReporter(err)
    pm.register(reporter)
    try:
        result = api.evaluate(
            spec,
            list(generators),
            iterative=not no_iterative,
            threshold=threshold,
            pm=pm,
            track=False if no_track else None,
        )
    finally:
        pm.unregister(reporter)
    out().print(console.evaluation_table(result, threshold))
    for row in result.summary():
        err.print(f"{row['method']}: {escape(row['source'])}", soft_wrap=True)
    if result.run_id:
        err.print(f"MLflow run [bold]{result.run_id}[/] (evaluation table, Fig. 10 scatter)")


def _attack(spec: str, collection: list[str], no_track: bool, options: dict) -> None:
    """``evaluate --collection``: :func:`facerecon.api.attack` with the command's options,
    and its table."""
    from facerecon import api, console
    from facerecon.engine.validation import load
    from facerecon.evaluation.attack_report import check_folder

    loaded = load(spec)
    # the folder is checked now, not after the attack: api.attack's default folder
    output = options["output"]
    check_folder(
        Path(output) if output else Path("evaluations") / loaded.name,
        loaded.name,
        " + ".join(collection),
    )
    track = False if no_track else None
    result, folder = api.attack(loaded, collection, track=track, pm=api.plugin_manager(), **options)
    out().print(console.attack_table(result))
    if not result.collection.type2:
        err.print("[yellow]warning:[/] one photo per person: no type II comparisons")
    if result.collection.skipped:
        err.print(f"skipped {len(result.collection.skipped)} photos (listed in attack.md)")
    if result.resumed:
        err.print(f"resumed: {len(result.resumed)} people taken from the earlier run")
    err.print(f"report: {folder}" + (f"; MLflow run {result.run_id}" if result.run_id else ""))


@main.command()
@click.argument("model", required=False)
@_model_options
@click.option(
    "--photos",
    multiple=True,
    default=("builtin:radar", "builtin:obama"),
    show_default=True,
    help="Labelled photos: builtin:radar, builtin:obama, ... or a folder with one subfolder "
    "per person; repeat to merge.",
)
@click.option("-o", "--output", type=click.Path(), help="Write the calibration JSON here.")
@_friendly
def calibrate(
    model: str | None,
    model_option: str | None,
    model_params: tuple[str, ...],
    photos: tuple[str, ...],
    output: str | None,
) -> None:
    """Calibrate MODEL's (or --model's) cosine thresholds at false-match rates 1e-2 and
    1e-3."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from facerecon import api, console
    from facerecon.judges import calibration

    model = _model_choice(model, model_option, default=None)
    params = _model_params(model_params)
    api.model(model, **params)  # a bad name or parameter before any photo is read
    collection = calibration.collect(photos)
    started = time.perf_counter()
    with Progress(
        "embedding", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as progress:
        task = progress.add_task("", total=len(collection))
        record = api.calibrate(
            model, photos, step=lambda: progress.advance(task), model_params=params
        )
    out().print(console.calibration_table(model, record))
    impostor, genuine = record["impostor"], record["genuine"]
    err.print(
        f"{record['impostor_pairs']} impostor pairs (cosine mean {impostor['mean']:.3f}, "
        f"max {impostor['max']:.3f}); {record['genuine_pairs']} genuine pairs"
        + (f" (mean {genuine['mean']:.3f}, min {genuine['min']:.3f})" if genuine["n"] else "")
        + f"; {record['skipped']} photo(s) without a face skipped; "
        f"{time.perf_counter() - started:.0f} s",
        soft_wrap=True,
    )
    if output:
        calibration.write(record, output)
        err.print(f"calibration -> {output}")
    else:
        err.print("not saved (-o FILE writes the calibration JSON)")


if __name__ == "__main__":
    main()
