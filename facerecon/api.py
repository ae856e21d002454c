"""The Python API: one call for everything the CLI does."""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from facerecon.core.context import RunResult, SweepContext
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import FaceModel
from facerecon.core.registry import Registered, plugin_manager, registry
from facerecon.core.spec import PluginRef, Spec
from facerecon.engine.runner import embed_photo, instantiate
from facerecon.engine.runner import run as run_spec
from facerecon.engine.sweep import run_sweep
from facerecon.engine.validation import check_plugin, load
from facerecon.evaluation.report import Report
from facerecon.evaluation.report import report as make_report
from facerecon.faces import photos as faces
from facerecon.ops.forward import forward_for
from facerecon.tracking.store import check_store, serve_ui


def validate(*paths: str | Path) -> list[Spec]:
    """Validate spec files; raises one error listing every problem of every file."""
    specs, lines = [], []
    for path in paths:
        try:
            specs.append(load(path))
        except FaceReconError as exc:
            lines += exc.lines
    if lines:
        raise FaceReconError(lines[0], lines=lines)
    return specs


def _tracked(spec: Spec, track: bool | None) -> Spec:
    """The spec with ``track`` (if given) as ``tracking.enabled``. A tracked spec's store is
    checked here, before any model loads: a dead server fails in seconds, not minutes."""
    if track is not None:
        tracking = spec.tracking.model_copy(update={"enabled": track})
        spec = spec.model_copy(update={"tracking": tracking})
    if spec.tracking.enabled:
        check_store(experiment=spec.tracking.experiment)
    return spec


def run(
    spec: str | Path | Spec, *, pm: pluggy.PluginManager | None = None, track: bool | None = None
) -> RunResult:
    """Validate (if a path) and run one spec; ``track`` overrides ``tracking.enabled``."""
    spec = spec if isinstance(spec, Spec) else load(spec)
    return run_spec(_tracked(spec, track), pm=pm)


def sweep(
    spec: str | Path | Spec,
    *,
    workers: int | None = None,
    executor: str = "local",
    address: str | None = None,
    pm: pluggy.PluginManager | None = None,
    track: bool | None = None,
    only: Sequence[str] = (),
) -> SweepContext:
    """Validate every variant of a sweep spec, then run them (or the ``only`` ones, by
    name) as child runs of one parent.

    ``executor="ray"`` runs each variant as a Ray task (on the cluster at ``address``).
    """
    spec = spec if isinstance(spec, Spec) else load(spec)
    return run_sweep(
        _tracked(spec, track),
        workers=workers,
        executor=executor,
        address=address,
        pm=pm,
        only=only,
    )


def report(experiment: str, folder: str | Path | None = None, *, log: bool = True) -> Report:
    """An experiment's runs as one labelled figure and table, in a folder and in MLflow."""
    return make_report(experiment, folder, log=log)


def _describe_type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not typing.get_args(annotation) else None
    return text or str(annotation).replace("typing.", "")


def plugins() -> list[dict[str, Any]]:
    """Every plugin: kind, name, package, parameters (name: type = default), one-line doc."""
    rows = []
    entry: Registered
    for kind, table in registry().by_kind.items():
        for name, entry in sorted(table.items()):
            params = [
                f"{field}: {_describe_type(info.annotation)} = "
                f"{info.get_default(call_default_factory=True)!r}"
                for field, info in entry.cls.Params.model_fields.items()
            ]
            doc = (entry.cls.__doc__ or "").strip().splitlines()
            rows.append(
                {
                    "kind": kind,
                    "name": name,
                    "package": entry.distribution,
                    "plugin": entry.plugin,
                    "params": params,
                    "doc": doc[0] if doc else "",
                }
            )
    return rows


def model(name: str = "dlib-resnet", **params: Any) -> FaceModel:
    """A face model plugin instance by name, with its parameters (``path=...`` for ``onnx``).

    A name or parameter the model does not take is one error line, as in a spec's
    ``model`` section: the key path, the bad value, what is allowed and close matches.
    """
    reg = registry()
    # a pathlib.Path is what Python callers hold for a file; the params take strings
    params = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in params.items()}
    lines = check_plugin(("model",), "model", {"name": name, **params}, reg)
    if lines:
        raise FaceReconError(lines[0], lines=lines)
    return instantiate(reg, "model", PluginRef(name=name, **params))


def layers(model_name: str = "dlib-resnet", **params: Any) -> list[tuple[str, tuple]]:
    """The tappable layers of a model (with its ``params``) and their output shapes (batch
    axis omitted)."""
    face_model = model(model_name, **params)
    net = face_model.network()
    return [("pixels", (face_model.input_size, face_model.input_size, 3))] + [
        (name, tuple(net.get_layer(name).output.shape[1:])) for name in face_model.tap_layers()
    ]


def embed(
    photo: str | Path,
    out: str | Path | None = None,
    *,
    model_name: str = "dlib-resnet",
    align: bool = True,
    model_params: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, str]:
    """The (pre-normalization) embedding of the face in a photo by a model (with its
    ``model_params``); saved to ``out`` (an .npy, its folder made if need be) if given."""
    if out is not None and Path(out).suffix.lower() != ".npy":
        # numpy.save would quietly write OUT.npy next to the name the user gave
        raise FaceReconError(f"{out}: embeddings are written as .npy; name the file *.npy")
    embedding, _, note = embed_photo(model(model_name, **(model_params or {})), str(photo), align)
    if out is not None:
        try:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            np.save(out, embedding)
        except OSError as exc:
            raise FaceReconError(f"{out}: cannot write the embedding ({exc.strerror})") from None
    return embedding, note


def embed_images(images: np.ndarray, model_name: str = "dlib-resnet") -> np.ndarray:
    """Embeddings of model-ready chips (N, S, S, 3) in [0, 1]."""
    face_model = model(model_name)
    return forward_for(face_model).numpy(
        np.stack(
            [
                faces.resize(i, face_model.input_size) if i.shape[0] != face_model.input_size else i
                for i in images
            ]
        )
    )[0]


def calibrate(
    model_name: str,
    photos: tuple[str, ...] | list[str],
    *,
    step=None,
    model_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Calibrate a model's (with its ``model_params``) cosine thresholds at false-match
    rates 1e-2 and 1e-3 on labelled photos (:func:`facerecon.judges.calibration.calibrate`);
    ``step`` is called per photo."""
    from facerecon.judges import calibration

    face_model = model(model_name, **(model_params or {}))
    return calibration.calibrate(face_model, photos, step=step or (lambda: None))


def ui(host: str = "127.0.0.1", port: int = 5000) -> int:
    """Serve the MLflow UI on the store in force; returns the server's exit code."""
    return serve_ui(host, port)


__all__ = [
    "attack",
    "calibrate",
    "embed",
    "embed_images",
    "evaluate",
    "generate",
    "layers",
    "lineup",
    "model",
    "plugins",
    "plugin_manager",
    "report",
    "run",
    "sweep",
    "ui",
    "validate",
]


# ---- feed-forward reconstruction (the `feedforward` solver plugin's generators) ---------


def generate(generator: str, embedding: str | Path | np.ndarray | None = None, **options: Any):
    """Images from a trained generator in one pass (``runs:/<run_id>/generator``); the
    options (``photo``, ``guide``, ``align``, ``output``, ``batch``) are those of the
    solver that trains generators (the built-in ``feedforward``), which does the work."""
    return registry().generator_solver().generate(generator, embedding, **options)


def evaluate(
    spec: str | Path | Spec,
    generators: list[str],
    *,
    iterative: bool = True,
    threshold: float = 0.6,
    pm: pluggy.PluginManager | None = None,
    track: bool | None = None,
):
    """Score generators against the spec's iterative solver on the spec's (held-out)
    targets with the spec's objective (paper, Table 1 and Fig. 10)."""
    spec = spec if isinstance(spec, Spec) else load(spec)
    solver = registry(pm).generator_solver()
    return solver.evaluate(
        _tracked(spec, track), generators, iterative=iterative, threshold=threshold, pm=pm
    )


def attack(
    spec: str | Path | Spec,
    collection: str | list[str],
    *,
    pairs: str | None = None,
    identities: int | None = None,
    generators: tuple[str, ...] = (),
    guide: str | None = None,
    iterative: bool = True,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    output: str | Path | None = None,
    pm: pluggy.PluginManager | None = None,
    track: bool | None = None,
):
    """Attack the spec's model on a labelled collection (:mod:`facerecon.evaluation.attack`); the
    result and the folder its report went to (``output``, default
    ``evaluations/<spec name>``)."""
    from facerecon.evaluation import attack_report
    from facerecon.evaluation.attack_sweep import evaluate_attack

    spec = _tracked(spec if isinstance(spec, Spec) else load(spec), track)
    result = evaluate_attack(
        spec, collection, pairs=pairs, identities=identities, generators=generators,
        guide=guide, iterative_runs=iterative, executor=executor, workers=workers,
        address=address, pm=pm,
    )  # fmt: skip
    folder = Path(output) if output is not None else Path("evaluations") / spec.name
    attack_report.write(result, folder)
    return result, folder


def lineup(folder: str | Path, *, log: bool = True) -> tuple[list[dict[str, Any]], str | None]:
    """Score the blind line-ups of an evaluation (its ``lineup/`` folder): one row per
    observer's answers file (:mod:`facerecon.evaluation.lineup`), and the MLflow run the scores were
    logged to (the evaluation's; None when untracked or ``log`` is false)."""
    from facerecon.evaluation import lineup as lineups

    folder = Path(folder)
    rows = lineups.score_folder(folder)
    return rows, lineups.log(folder, rows) if log else None
