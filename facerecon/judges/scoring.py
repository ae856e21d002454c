"""Judges: what other than the optimized model says of the kept reconstructions.

For each judge model, the cosine between its embedding of a reconstruction and of the
target's photo (type I) and of other photos of the same person (type II), and whether
that passes the judge's calibrated thresholds; and whether a face detector finds a face.
Judges never enter the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facerecon.core.context import Judges, References
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import FaceModel
from facerecon.core.registry import Registry
from facerecon.core.spec import PluginRef, Spec
from facerecon.faces import photos as faces
from facerecon.faces.embedding import embed
from facerecon.faces.neighbours import collection_index


def _photo_chip(
    model: FaceModel, source: str, base_dir: Path, what: str, align: bool = True
) -> np.ndarray:
    """The judge's chip of a photo; a tight face crop (``align: false``) is treated like a
    reconstruction, as another model's chip."""
    try:
        image = faces.read_image(source, base_dir)
        return faces.chip(model, image, True, source)[0] if align else model.align_chip(image)
    except FaceReconError as exc:
        raise FaceReconError(f"{what}: {exc} (judge {model.name!r})") from None


def judge_names(spec: Spec, reg: Registry) -> tuple[list[str], dict[str, str]]:
    """The judge models a spec asks for (any calibrated model), else the default: the
    available calibrated models marked ``default_judge`` other than the attacked one; and
    the default judges left out, with why."""
    if spec.judges.models is not None:
        return list(spec.judges.models), {}
    names, skipped = [], {}
    for name in reg.names("model"):
        cls = reg.get("model", name)
        if name == spec.model.name or not cls.thresholds or not cls.default_judge:
            continue
        reason = cls.available()
        if reason is None:
            names.append(name)
        else:
            skipped[name] = reason
    return names, skipped


def prepare(
    spec: Spec, reg: Registry, instantiate: Callable[[Registry, str, PluginRef], Any]
) -> Judges:
    """Build the judges (with the runner's ``instantiate``, which shares model instances)
    and embed every target's reference photos, before any solving, so a missing judge or a
    photo without a face stops the run at once."""
    names, skipped = judge_names(spec, reg)
    models = []
    for name in names:
        # the default list holds available models only; a judge the spec names may not be
        reason = reg.get("model", name).available() if spec.judges.models else None
        if reason is not None:
            raise FaceReconError(f"judges.models: judge {name!r} is not available: {reason}")
        models.append(instantiate(reg, "model", PluginRef(name=name)))
    detector = None
    if spec.judges.detector is not None:
        detector = instantiate(reg, "detector", PluginRef(name=spec.judges.detector))
    judges = Judges(models, detector, skipped=skipped)
    for model in models:
        refs = []
        for t, target in enumerate(spec.targets):
            first = target.image if target.image is not None else target.photo
            type1 = None
            if first is not None:
                chip = _photo_chip(model, first, spec.base_dir, f"targets[{t}]", target.align)
                type1 = embed(model, chip[None])[0]
            others = [
                _photo_chip(model, src, spec.base_dir, f"targets[{t}].same_person[{i}]")
                for i, src in enumerate(target.same_person)
            ]
            type2 = embed(model, np.stack(others)) if others else np.zeros((0, 0), np.float32)
            refs.append(References(type1, type2, _impostors(model, spec, type1, type2)))
        judges.references[model.name] = refs
    return judges


def _impostors(
    model: FaceModel, spec: Spec, type1: np.ndarray | None, type2: np.ndarray
) -> np.ndarray | None:
    """The impostor collection's embeddings without the target's own photos (a photo of
    the collection used as the target embeds to a cosine of 1 with it, up to float error)."""
    if spec.judges.impostors is None:
        return None
    rows = collection_embeddings(model, spec.judges.impostors, spec.base_dir)
    own = [v for v in (type1, *type2) if v is not None]
    if own:
        rows = rows[np.max(rows @ np.stack(own).T, axis=1) < SAME_PHOTO]
    return rows


#: cosine at or above which two embeddings come from the same photo
SAME_PHOTO = 0.999


def collection_embeddings(model: FaceModel, source: str, base_dir: Path) -> np.ndarray:
    """L2-normalized embeddings of every face in a collection, aligned (photos without one
    are left out); cached for built-in collections, whose photos never change."""
    try:
        return collection_index(model, source, True, base_dir)["embeddings"]
    except FaceReconError as exc:
        raise FaceReconError(f"judges.impostors: {exc}") from None


def passes(model: FaceModel, cosine: float) -> dict[str, bool]:
    """Whether a cosine passes the model's threshold at each calibrated false-match rate."""
    return {f"pass_fmr{rate}": bool(cosine >= t) for rate, t in model.thresholds.items()}


def score(judges: Judges, images: list[np.ndarray], entries: list[int]) -> list[dict]:
    """Scores of each kept reconstruction (``images[i]`` reconstructs a target of the
    spec's ``targets[entries[i]]``).

    Per reconstruction: ``{judge: {"type1": cos, "type2": [cos...], "type2_mean": cos,
    "type1_pass_fmr1e-2": bool, ...}, "detector": {"face": bool, "score": float}}``.
    """
    out: list[dict] = [{} for _ in images]
    for model in judges.models:
        chips = np.stack([model.align_chip(image) for image in images])
        recon = embed(model, chips)
        for i, entry_index in enumerate(entries):
            refs = judges.references[model.name][entry_index]
            entry: dict = {}
            if refs.type1 is not None:
                entry["type1"] = float(recon[i] @ refs.type1)
                entry |= {f"type1_{k}": v for k, v in passes(model, entry["type1"]).items()}
            if len(refs.type2):
                cosines = (refs.type2 @ recon[i]).astype(float).tolist()
                entry["type2"] = cosines
                entry["type2_mean"] = float(np.mean(cosines))
                entry |= {f"type2_{k}": v for k, v in passes(model, entry["type2_mean"]).items()}
            if refs.impostors is not None and len(refs.impostors):
                # identification: how many other people's photos score at least as high
                scores = refs.impostors @ recon[i]
                entry["impostor_max"] = float(scores.max())
                for kind in ("type1", "type2_mean"):
                    if kind in entry:
                        rank = 1 + int(np.sum(scores >= entry[kind]))
                        entry[f"{kind.removesuffix('_mean')}_rank"] = rank
            out[i][model.name] = entry
    if judges.detector is not None:
        for i, image in enumerate(images):
            found = judges.detector.detect(image)
            out[i][judges.detector.name] = {
                "face": bool(found),
                "score": float(found[0].score) if found else 0.0,
            }
    return out


def flat(scores: dict) -> dict[str, float]:
    """One reconstruction's scores as flat metrics: ``judge/<model>/type1``,
    ``judge/<model>/type2_mean``, ``judge/<model>/type1_pass_fmr1e-2`` (1 or 0), ...,
    ``judge/<detector>/face`` and ``judge/<detector>/score``."""
    out = {}
    for judge, entry in scores.items():
        for key, value in entry.items():
            if isinstance(value, list):
                continue
            out[f"judge/{judge}/{key}"] = float(value)
    return out


def means(scores: list[dict]) -> dict[str, float]:
    """The :func:`flat` scores of several reconstructions, each key's mean over those that
    have it (type II, say, only where a target has other photos)."""
    flats = [flat(entry) for entry in scores]
    keys = dict.fromkeys(k for f in flats for k in f)
    return {k: float(np.mean([f[k] for f in flats if k in f])) for k in keys}


def mark(entry: dict, kind: str) -> str:
    """A table cell: the cosine of ``kind`` ("type1", "type2_mean"), with one check per
    false-match rate whose threshold it passes (e.g. "0.712 ✓✓"), or "-" if absent."""
    if kind not in entry:
        return "-"
    prefix = "type1" if kind == "type1" else "type2"
    checks = sum(1 for k, v in entry.items() if k.startswith(f"{prefix}_pass") and v)
    return f"{entry[kind]:.3f}" + (" " + "✓" * checks if checks else "")


def detection(scores: dict) -> dict | None:
    """The detector's entry of one reconstruction's scores, if a detector judged it."""
    return next((entry for entry in scores.values() if "face" in entry), None)


def columns(scores: list[dict]) -> list[tuple[str, str, str]]:
    """(header, judge, key) of the judge columns a summary table shows for these scores."""
    cols = []
    for judge in dict.fromkeys(j for s in scores for j in s):
        if any("face" in s.get(judge, {}) for s in scores):
            continue  # detectors get their own column
        for key, label in (("type1", "I"), ("type2_mean", "II")):
            if any(key in s.get(judge, {}) for s in scores):
                cols.append((f"{judge} {label}", judge, key))
    return cols
