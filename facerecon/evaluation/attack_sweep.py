"""Running an attack evaluation: one sweep variant per attacked person, on the sweep
executors, resumable from the store; generators and the starting-image baseline scored
alongside; the protocol's numbers (:mod:`facerecon.evaluation.attack`) and figures
(:mod:`facerecon.evaluation.attack_report`) written out and to the evaluation's MLflow run."""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pluggy
import tensorflow as tf

from facerecon.core.context import Judges, References, Variant
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import FaceModel, PrepareContext
from facerecon.core.registry import plugin_manager, registry
from facerecon.core.spec import PluginRef, Spec
from facerecon.engine.runner import embed_photo, instantiate
from facerecon.engine.validation import validate
from facerecon.evaluation import attack
from facerecon.faces import datasets
from facerecon.faces import photos as faces
from facerecon.faces.neighbours import nearest_means
from facerecon.judges import calibration
from facerecon.judges import scoring as judging
from facerecon.ops.forward import forward_for


@dataclass
class Method:
    """One way of reconstructing: its per-person judge scores and images."""

    name: str
    scores: dict[str, dict] = field(default_factory=dict)  # person -> judging.score entry
    images: dict[str, np.ndarray] = field(default_factory=dict)  # person -> image
    #: per template: a generator's batch time over the templates; the iterative runs'
    #: median wall time (which includes a worker's first model build)
    seconds: float | None = None
    durations: dict[str, float] = field(default_factory=dict)  # person -> run seconds
    source: str = ""  # what made the images (a generator's model URI)


@dataclass
class AttackResult:
    """An attack evaluation: the collection, the judges' calibration, every method."""

    spec: Spec
    collection: attack.Collection
    judges: list[attack.Calibrated]
    attacked: str
    detector: str | None
    methods: list[Method]
    model: FaceModel  # the attacked model: it aligns the photos drawn beside the attacks
    run_id: str | None = None
    folder: Path | None = None
    resumed: list[str] = field(default_factory=list)  # people taken from an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # person -> why their run failed
    #: per judge, per person of the collection: the judge's embeddings of their photos
    references: dict[str, list[References]] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per method and judge (SAR, mean cosines, face rate, seconds)."""
        out = []
        for method in self.methods:
            people = [p.name for p in self.collection.people if p.name in method.scores]
            out += attack.method_rows(
                method.name,
                [method.scores[p] for p in people],
                self.judges,
                self.attacked,
                self.detector,
                method.seconds,
            )
        return out


def _models(spec: Spec, reg) -> tuple[FaceModel, list[FaceModel]]:
    """The attacked model and the judge models (the attacked one first: white-box)."""
    attacked = instantiate(reg, "model", spec.model)
    names, skipped = judging.judge_names(spec, reg)
    for name, reason in skipped.items():
        warnings.warn(f"judge {name!r} left out: {reason}", stacklevel=2)
    judges = [attacked]
    for name in names:
        if name == attacked.name:
            continue
        if (reason := reg.get("model", name).available()) is not None:
            raise FaceReconError(f"judges.models: judge {name!r} is not available: {reason}")
        judges.append(instantiate(reg, "model", PluginRef(name=name)))
    return attacked, judges


def _variant(spec: Spec, person: attack.Person, judges: list[str]) -> Variant:
    data = spec.resolved()
    data.pop("sweep", None)
    data["targets"] = [
        {"image": str(person.photos[0]), "same_person": [str(p) for p in person.photos[1:]]}
    ]
    data["judges"] = {**data["judges"], "models": judges, "impostors": None}
    data["tracking"]["run_name"] = f"{spec.name} [{person.name}]"
    return Variant(person.name, {"identity": person.name}, validate(data, base_dir=spec.base_dir))


def key(spec: Spec, collection: str, pairs: str | None, judges: list[str]) -> str:
    """What identifies an evaluation in the store, for resuming it: the recipe (without
    tracking), the collection, the pairs file and the judges."""
    recipe = spec.resolved()
    for section in ("tracking", "sweep", "name", "description"):
        recipe.pop(section, None)
    text = json.dumps([recipe, collection, pairs, judges], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _finished(
    spec: Spec, evaluation: str, people: list[attack.Person]
) -> tuple[str | None, Method]:
    """The latest tracked run of this evaluation, and the people its finished child runs
    already scored (their ``candidates.json``) with their kept images where stored."""
    import skimage.io

    from facerecon.tracking.store import client as tracking_client

    done = Method(f"iterative ({spec.solver.name})")
    client = tracking_client()
    experiment = client.get_experiment_by_name(spec.tracking.experiment)
    if experiment is None:
        return None, done
    found = client.search_runs(
        [experiment.experiment_id],
        f"tags.`facerecon.attack` = '{evaluation}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        return None, done
    parent = found[0].info.run_id
    by_photo = {str(p.photos[0]): p.name for p in people}
    token = None
    while True:
        page = client.search_runs(
            [experiment.experiment_id],
            f"tags.mlflow.parentRunId = '{parent}' and attributes.status = 'FINISHED'",
            page_token=token,
        )
        for run in page:
            person = by_photo.get(run.data.params.get("targets.0.image", ""))
            if person is None:
                continue
            run_id = run.info.run_id
            table = json.loads(
                Path(client.download_artifacts(run_id, "candidates.json")).read_text()
            )
            columns = table["columns"]
            row = next(r for r in table["data"] if r[columns.index("kept")])
            done.scores[person] = json.loads(row[columns.index("judges")])
            if run.info.end_time:
                done.durations[person] = (run.info.end_time - run.info.start_time) / 1000
            if any(a.path == "kept/target_0.png" for a in client.list_artifacts(run_id, "kept")):
                image = skimage.io.imread(client.download_artifacts(run_id, "kept/target_0.png"))
                done.images[person] = image[..., :3] / 255.0
        if not (token := page.token):
            break
    return parent, done


def _references(models: list[FaceModel], embedded, people: list[attack.Person]) -> dict:
    return {
        m.name: [
            References(
                embedded[m.name].of(p.photos[:1])[0],
                embedded[m.name].of(p.photos[1:])
                if len(p.photos) > 1
                else np.zeros((0, 0), np.float32),
            )
            for p in people
        ]
        for m in models
    }


def _baseline(spec: Spec, reg, model: FaceModel, templates: np.ndarray) -> np.ndarray:
    """Per template, the image the iterative solver starts from before any step: the mean
    of the template's nearest strangers (``init.nearest``), the spec's mean face, or the
    average face, as the spec's parameterization makes it (a generator's start is its own)."""
    init = spec.init
    if init.kind == "mean" and init.nearest:
        starts = nearest_means(
            model, init.images, init.align, templates, init.nearest, spec.base_dir
        )
    else:
        if init.kind == "mean":
            start = faces.mean_chip(model, init.images, init.align, spec.base_dir)
        else:
            average = faces.read_image("builtin:average-face")
            start = faces.chip(model, average, False, "average")[0]
        starts = np.repeat(start[None], len(templates), axis=0)
    return _through(spec, reg, model, starts)


def _through(spec: Spec, reg, model: FaceModel, images: np.ndarray) -> np.ndarray:
    """``images`` as the spec's parameterization starts from them, a few at a time."""
    param = instantiate(reg, "parameterization", spec.parameterization)
    param.prepare(
        PrepareContext(
            model=model,
            forward=lambda x, taps: forward_for(model, taps).numpy(x),
            guides=None,
            load_images=lambda src, align: faces.chips(model, src, align, spec.base_dir),
            seed=spec.seed,
        )
    )
    made = [
        param.to_images(tf.constant(param.from_images(images[i : i + 4]))).numpy()
        for i in range(0, len(images), 4)
    ]
    return np.concatenate(made).astype(np.float32)


def _generated(
    label: str, source: str, attacked: FaceModel, people: list[attack.Person], guide: str | None
) -> Method:
    """A generator's one-pass reconstructions of every person's template (a guided one
    gets ``guide``, a tight crop, for every template, unless it makes its own) and its
    seconds per template."""
    generator = registry(plugin_manager()).generator_solver().load_generator(source)
    generator.check_model(attacked, source)
    strangers = generator.own_guides(attacked)
    if generator.guided and strangers is None and guide is None:
        raise FaceReconError(f"{source}: a guided generator needs --guide (its guide image)")
    rows = np.stack([embed_photo(attacked, str(p.photos[0]))[0] for p in people])
    chip = None
    if strangers is not None:
        strangers.preload()  # reading the collection's photos is set-up, not generation
    elif generator.guided:
        chip = faces.chip(attacked, faces.read_image(guide), False, guide)[0]

    def one_pass() -> np.ndarray:
        # a generator with its own guides makes them per template: part of the pass's cost
        guides = chip if strangers is None else strangers.means(rows)
        return generator.generate(rows, guides, 32)

    one_pass()  # trace first
    start = time.perf_counter()
    images = one_pass()
    seconds = (time.perf_counter() - start) / len(people)
    named = dict(zip((p.name for p in people), images, strict=True))
    return Method(label, images=named, seconds=seconds, source=source)


def evaluate_attack(
    spec: Spec,
    collection: str | Sequence[str],
    *,
    pairs: str | None = None,
    identities: int | None = None,
    generators: tuple[str, ...] = (),
    guide: str | None = None,
    iterative_runs: bool = True,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    pm: pluggy.PluginManager | None = None,
) -> AttackResult:
    """Attack ``spec.model``'s templates of a labelled collection with the spec's iterative
    recipe (and ``generators``), judged as the module doc of
    :mod:`facerecon.evaluation.attack` says; ``iterative_runs=False`` scores the generators
    and the baseline only."""
    from facerecon.engine.sweep import run_sweep

    pm = pm or plugin_manager()
    reg = registry(pm)
    if (
        spec.solver.name in reg.names("solver")
        and reg.get("solver", spec.solver.name).trains_generators
    ):
        raise FaceReconError(
            f"solver.name: {spec.solver.name!r}; the attack's recipe is an iterative solver "
            f"(adam, sgd); pass trained generators with --generator"
        )
    sources = [collection] if isinstance(collection, str) else list(collection)
    photos = calibration.collect(sources, spec.base_dir)
    photos = [datasets.LabelledPhoto(p.path.resolve(), p.identity) for p in photos]
    attacked, models = _models(spec, reg)
    skipped: dict[Path, str] = {}
    embedded = {m.name: attack.embed_collection(m, photos, skipped) for m in models}
    listed = None
    collection = " + ".join(sources)
    if pairs is not None:
        if len(sources) > 1:
            raise FaceReconError("--pairs: give one --collection, the folder pairs.txt names")
        root = Path(sources[0]).expanduser()
        root = (root if root.is_absolute() else spec.base_dir / root).resolve()
        listed = attack.read_pairs(Path(pairs), root)
    people = attack.select(photos, skipped, identities)
    if not people:
        raise FaceReconError(f"{collection}: no photo with a face that every judge finds")
    found = attack.Collection(collection, people, skipped, listed)
    calibrated = [attack.judge_thresholds(m, embedded[m.name], listed) for m in models]
    names = [m.name for m in models]
    result = AttackResult(
        spec, found, calibrated, attacked.name, spec.judges.detector, [], attacked
    )
    evaluation = key(spec, collection, pairs, names)
    tags = {
        "facerecon.attack": evaluation,
        "facerecon.kind": "attack",
        "facerecon.collection": collection,
    }
    parent = None
    iterative = Method(f"iterative ({spec.solver.name})")
    if spec.tracking.enabled:
        parent, iterative = _finished(spec, evaluation, people)
        result.resumed = sorted(iterative.scores)
    todo = [p for p in people if p.name not in iterative.scores] if iterative_runs else []
    variants = [_variant(spec, p, names) for p in todo]
    if variants:
        context = run_sweep(
            spec, workers=workers, executor=executor, address=address, pm=pm,
            variants=variants, run_id=parent, tags=tags,
        )  # fmt: skip
        result.run_id = context.run_id
        for outcome in context.outcomes:
            if outcome.status == "FINISHED" and outcome.scores:
                iterative.scores[outcome.name] = outcome.scores[0]
                iterative.images[outcome.name] = outcome.images[0]
                iterative.durations[outcome.name] = outcome.seconds
        result.failed = {o.name: o.error or o.status for o in context.outcomes
                         if o.status != "FINISHED"}  # fmt: skip
    else:
        result.run_id = parent
    if iterative.durations:
        iterative.seconds = float(np.median(list(iterative.durations.values())))
    judges = Judges(models, None)
    if spec.judges.detector is not None:
        judges.detector = instantiate(reg, "detector", PluginRef(name=spec.judges.detector))
    judges.references = result.references = _references(models, embedded, people)
    methods = [iterative] if iterative_runs else []
    for index, source in enumerate(generators, 1):
        methods.append(_generated(f"generator {index}", source, attacked, people, guide))
    templates = embedded[attacked.name].of([p.photos[0] for p in people])
    starts = _baseline(spec, reg, attacked, templates)
    named = {p.name: start for p, start in zip(people, starts, strict=True)}
    methods.append(Method("baseline (start image)", images=named))
    entries = list(range(len(people)))
    for method in methods:
        if method is iterative:  # its runs scored it, with the same judges and photos
            continue
        scored = judging.score(judges, [method.images[p.name] for p in people], entries)
        method.scores = {p.name: s for p, s in zip(people, scored, strict=True)}
    result.methods = methods
    return result
