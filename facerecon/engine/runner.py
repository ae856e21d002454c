"""One run: validated spec -> plugins -> targets and guides -> batch -> solver -> hooks."""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pluggy
import tensorflow as tf

from facerecon.core.context import BatchElement, RunContext, RunResult
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import FaceModel, Plugin, PrepareContext
from facerecon.core.registry import Registry, plugin_manager, registry
from facerecon.core.spec import PluginRef, Spec, TargetRef, term_labels
from facerecon.engine.objective import Objective, Term, Transforms
from facerecon.faces import photos as faces
from facerecon.faces.embeddings import check_rows, numeric, read_npy
from facerecon.faces.neighbours import nearest_means
from facerecon.judges import scoring as judging
from facerecon.ops.forward import check_taps, forward_for


@cache
def _model(cls: type[FaceModel], params: str) -> FaceModel:
    # One instance per (model, params) and process: networks and compiled passes are reused.
    return cls(cls.Params.model_validate_json(params))


def models_built() -> int:
    """How many models this process has built (sweep workers report their reuse with it)."""
    return _model.cache_info().misses


def instantiate(reg: Registry, kind: str, ref: PluginRef, host_keys: set[str] = frozenset()) -> Any:
    """The plugin instance a spec entry names, with its validated parameters."""
    cls: type[Plugin] = reg.get(kind, ref.name)
    params = cls.Params.model_validate({k: v for k, v in ref.params.items() if k not in host_keys})
    if kind == "model":
        return _model(cls, params.model_dump_json())
    return cls(params)


def load_embeddings(path: Path, model: FaceModel, normalized: bool) -> np.ndarray:
    """Rows of an .npy embedding file, checked against the model."""
    data = read_npy(path)
    rows = np.atleast_2d(numeric(data, str(path)))
    if rows.ndim != 2 or rows.shape[1] != model.embedding_size:
        raise FaceReconError(
            f"{path}: embedding of shape {tuple(data.shape)}; model {model.name!r} makes "
            f"{model.embedding_size}-d embeddings (shape ({model.embedding_size},) or "
            f"(N, {model.embedding_size}))"
        )
    check_rows(rows, str(path))
    norms = np.linalg.norm(rows, axis=1)
    if normalized and not np.allclose(norms, 1.0, atol=1e-3):
        raise FaceReconError(
            f"{path}: `normalized: true` but the norms are {np.round(norms, 3).tolist()}, not 1"
        )
    return rows


def embed_photo(
    model: FaceModel, source: str, align: bool = True, base_dir: Path = Path(".")
) -> tuple[np.ndarray, np.ndarray, str]:
    """(embedding, chip, which-face note) of one photo."""
    chip, note = faces.chip(model, faces.read_image(source, base_dir), align, source)
    embedding, _ = forward_for(model).numpy(chip[None])
    return embedding[0], chip, note


def _targets(
    spec: Spec, model: FaceModel, notes: list[str]
) -> tuple[np.ndarray, list[bool], list[Any], list[int]]:
    """Target rows: embeddings, normalized flags, photo chips, and the spec entry of each;
    which face of each photo was used goes to ``notes``."""
    embeddings, normalized, chips, entries = [], [], [], []
    for i, ref in enumerate(spec.targets):
        for emb, chip in _target_rows(ref, spec.base_dir, model, notes, f"targets[{i}]"):
            unit = emb / np.linalg.norm(emb) if ref.normalized and chip is not None else emb
            embeddings.append(unit * ref.scale)
            normalized.append(ref.normalized)
            chips.append(chip)
            entries.append(i)
    return np.stack(embeddings).astype(np.float32), normalized, chips, entries


def _target_rows(
    ref: TargetRef, base_dir: Path, model: FaceModel, notes: list[str], where: str
) -> list[tuple[Any, Any]]:
    if ref.embedding is not None:
        path = Path(ref.embedding).expanduser()
        rows = load_embeddings(
            path if path.is_absolute() else base_dir / path, model, ref.normalized
        )
        return [(row, None) for row in rows]
    emb, chip, note = embed_photo(model, ref.image, ref.align, base_dir)
    notes.append(f"{where} {ref.image}: {note}")
    return [(emb, chip)]


def _init(
    spec: Spec,
    elements: list[BatchElement],
    guides: list[np.ndarray],
    model: FaceModel,
    targets: np.ndarray,
) -> np.ndarray:
    size = model.input_size
    rng = np.random.default_rng(spec.seed)
    init = spec.init
    if init.kind == "noise":
        shape = (len(elements), size, size, 3)
        return np.clip(0.5 + init.noise * rng.standard_normal(shape), 0, 1).astype(np.float32)
    if init.kind == "guide":
        images = np.stack([guides[e.guide] for e in elements])
    elif init.kind == "mean" and init.nearest:
        means = nearest_means(model, init.images, init.align, targets, init.nearest, spec.base_dir)
        images = means[[e.target for e in elements]]
    else:
        if init.kind == "mean":
            base = faces.mean_chip(model, init.images, init.align, spec.base_dir)
        else:
            photo = faces.read_image(init.image, spec.base_dir)
            base = faces.chip(model, photo, False, init.image)[0]
        images = np.repeat(base[None], len(elements), axis=0)
    # Restarts from one start image would solve identical copies: every restart after the
    # first starts from seeded noise around it (restart 0 keeps the start image exactly).
    later = np.array([e.restart > 0 for e in elements])
    if later.any():
        noise = init.noise * rng.standard_normal(images[later].shape)
        images[later] = np.clip(images[later] + noise, 0, 1)
    return images.astype(np.float32)


def prepare(spec: Spec, reg: Registry | None = None) -> tuple[RunContext, Objective, Any]:
    """Everything up to step 0: plugins, targets, guides, batch, objective, initial images."""
    reg = reg or registry()
    model: FaceModel = instantiate(reg, "model", spec.model)
    metric = instantiate(reg, "metric", spec.loss.metric)
    terms = []
    for ref, label in zip(spec.loss.regularizers, term_labels(spec.loss.regularizers), strict=True):
        reg_obj = instantiate(reg, "regularizer", ref, {"weight", "schedule", "label"})
        check_taps(model, reg_obj.taps(), f"loss.regularizers[{len(terms)}]")
        terms.append(Term(label, reg_obj, ref.weight, ref.schedule))
    solver = instantiate(reg, "solver", spec.solver)
    parameterization = instantiate(reg, "parameterization", spec.parameterization)
    transforms = Transforms(
        [instantiate(reg, "transform", ref) for ref in spec.transforms.chain],
        spec.transforms.samples,
        spec.seed,
    )

    face_notes: list[str] = []
    targets, normalized, target_chips, entries = _targets(spec, model, face_notes)
    # A folder, video or collection names one guide per image (e.g. the frames of a clip).
    guide_chips = [
        chip for g in spec.guides for chip in faces.chips(model, g.image, g.align, spec.base_dir)
    ]
    guide_ids = list(range(len(guide_chips))) or [None]
    elements = [
        BatchElement(t, g, r)
        for t in range(len(targets))
        for g in guide_ids
        for r in range(spec.restarts)
    ]
    index = [e.target for e in elements]
    objective = Objective(
        model,
        metric,
        terms,
        targets[index],
        np.array(normalized)[index],
        parameterization,
        transforms,
    )
    guides = np.stack([guide_chips[e.guide] for e in elements]) if guide_chips else None

    def forward(images: np.ndarray, taps: list[str]):
        return forward_for(model, taps).numpy(images)

    prep = PrepareContext(
        model=model,
        forward=forward,
        guides=guides,
        seed=spec.seed,
        load_images=lambda src, align: faces.chips(model, src, align, spec.base_dir),
    )
    objective.prepare(prep)
    context = RunContext(
        spec=spec,
        model=model,
        elements=elements,
        targets=targets,
        target_images=target_chips,
        guide_images=guide_chips,
        labels=objective.labels,
        total_steps=getattr(solver.params, "steps", 0),
    )
    context.init = _init(spec, elements, guide_chips, model, targets)
    plugins = {"model": model, "parameterization": parameterization, "solver": solver}
    context.weights_terms = {kind: p.terms for kind, p in plugins.items() if p.terms}
    context.target_entries = entries
    # A photo with several faces gives its largest: reporters say which, MLflow tags it.
    context.target_faces = face_notes
    context.judges = judging.prepare(spec, reg, instantiate)
    return context, objective, solver


def best_per_target(context: RunContext, distance: np.ndarray) -> list[int]:
    """Per target, the batch index with the smallest embedding distance (paper, Sec. 3)."""
    best: dict[int, int] = {}
    for i, element in enumerate(context.elements):
        j = best.get(element.target)
        if j is None or distance[i] < distance[j]:
            best[element.target] = i
    return [best[t] for t in sorted(best)]


def _consume_init(context: RunContext) -> np.ndarray:
    """The starting images, dropped from the context: a large batch need not stay alive."""
    init, context.init = context.init, None
    return init


def run(spec: Spec, *, pm: pluggy.PluginManager | None = None) -> RunResult:
    """Run one validated spec; lifecycle hooks see every stage. Returns the result."""
    pm = pm or plugin_manager()
    started = time.time()  # loading the model and the targets is part of the run
    context, objective, solver = prepare(spec, registry(pm))
    context.started = started
    pm.hook.before_run(context=context)
    try:
        solved = solver.solve(
            objective,
            _consume_init(context),
            lambda step: pm.hook.after_step(context=context, step=step),
        )
        weights = tf.constant(objective.weights_at(max(solved.steps - 1, 0)))
        final = {k: v.numpy() for k, v in objective(tf.constant(solved.images), weights).items()}
        best = best_per_target(context, final["distance"])
        entries = context.target_entries
        context.result = RunResult(
            images=solved.images,
            terms=final,
            best=best,
            judges=judging.score(
                context.judges,
                [solved.images[i] for i in best],
                [entries[context.elements[i].target] for i in best],
            ),
            steps=solved.steps,
            stop_reason=solved.stop_reason,
            run_id=context.run_id,
            extras=solved.extras,
            frames=solved.frames,
        )
    except BaseException as exc:
        pm.hook.on_error(context=context, error=exc)
        raise
    pm.hook.after_run(context=context)
    if failure := context.result.failure:  # after_run has kept its images and ended it FAILED
        raise FaceReconError(f"{spec.name}: {failure}; lower solver.lr or the regularizer weights")
    return context.result
