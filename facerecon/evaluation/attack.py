"""Template-inversion attack evaluation, the way the field reports it.

On a labelled face collection, every selected person's template (the attacked model's
embedding of one photo) is inverted; each judge model compares the reconstruction with that
photo (type I) and with the person's other photos (type II). A judge's thresholds come from
the same collection's impostor pairs at fixed false-match rates; the share of
reconstructions (type I) or of reconstruction-photo comparisons (type II) at or above a
threshold is the success attack rate (SAR). The attacked model judging its own inversion is
the white-box setting; any other judge, transfer. The real photos' genuine pairs give the
true-accept rate (TAR) the attack is measured against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerecon.core.cache import cached_array
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import FaceModel
from facerecon.faces import datasets
from facerecon.faces import photos as faces
from facerecon.judges import calibration

#: false-match rates reported; one is left out unless the impostor pairs put at least
#: :data:`MIN_ABOVE` of them above its threshold
RATES = ("1e-2", "1e-3", "1e-4")
MIN_ABOVE = 10


@dataclass
class Embedded:
    """One model's embeddings of a collection's photos (rows L2-normalized)."""

    rows: np.ndarray
    paths: list[Path]
    identities: list[str]

    def of(self, paths: Sequence[Path]) -> np.ndarray:
        index = {p: i for i, p in enumerate(self.paths)}
        return self.rows[[index[p] for p in paths]]


@dataclass
class Person:
    """One attacked identity: the template's photo first, then the others."""

    name: str
    photos: list[Path]


@dataclass
class Calibrated:
    """A judge's thresholds on the collection and the real photos' pair scores."""

    name: str
    thresholds: dict[str, float]
    impostor: np.ndarray
    genuine: np.ndarray
    #: where the thresholds come from: "collection", or the judge's own calibration
    #: (``thresholds.json``) when the collection has a single person
    source: str = "collection"

    def tar(self) -> dict[str, float]:
        return {r: calibration.share_at_least(self.genuine, t) for r, t in self.thresholds.items()}


@dataclass
class Collection:
    """A labelled collection as the attack evaluation uses it."""

    source: str
    people: list[Person]
    #: photo -> why it is not used (unreadable, or a model found no face there)
    skipped: dict[Path, str] = field(default_factory=dict)
    pairs: tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]] | None = None

    @property
    def type2(self) -> bool:
        return any(len(p.photos) > 1 for p in self.people)


def read_pairs(path: Path, root: Path) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """LFW's ``pairs.txt``: (matched, mismatched) photo pairs under ``root``. A first line of
    one or two counts is a header; ``name i j`` is a matched pair, ``a i b j`` a mismatched
    one, numbers as in ``name/name_0001.jpg``."""

    def photo(name: str, number: str) -> Path:
        return root / name / f"{name}_{int(number):04d}.jpg"

    matched, mismatched = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or (n == 1 and all(p.isdigit() for p in parts)):
            continue
        if len(parts) == 3:
            matched.append((photo(parts[0], parts[1]), photo(parts[0], parts[2])))
        elif len(parts) == 4:
            mismatched.append((photo(parts[0], parts[1]), photo(parts[2], parts[3])))
        else:
            raise FaceReconError(
                f"{path}:{n}: {line.strip()!r}: a pair is 'name i j' or 'name1 i name2 j'"
            )
    return matched, mismatched


def embed_collection(
    model: FaceModel, photos: Sequence[datasets.LabelledPhoto], skipped: dict[Path, str]
) -> Embedded:
    """The model's embeddings of every photo it finds a face in, kept in the cache (keyed by
    the files' paths, sizes and times); photos it cannot read or finds no face in go to
    ``skipped``."""
    usable = []
    for photo in photos:
        if photo.path in skipped:
            continue
        try:
            faces.read_photo(photo.path)
        except FaceReconError as exc:
            skipped[photo.path] = str(exc).split(": ", 1)[-1].splitlines()[0][:120]
            continue
        usable.append(photo)
    stamp = "|".join(_stamp(p.path) for p in usable)
    found: list[datasets.LabelledPhoto] = []

    def compute() -> np.ndarray:
        rows, _, missing = calibration.embed_photos(model, usable)
        # a row of NaN marks "no face", so the cached array keeps its photo order
        out = np.full((len(usable), model.embedding_size), np.nan, np.float32)
        hit = [i for i, p in enumerate(usable) if p.path not in set(missing)]
        out[hit] = rows
        return out

    table = cached_array(
        "embeddings", model.name, f"attack|{model.params.model_dump_json()}|{stamp}", compute
    )
    for photo, row in zip(usable, table, strict=True):
        if np.isnan(row).any():
            skipped.setdefault(photo.path, f"no face found by {model.name}")
        else:
            found.append(photo)
    rows = table[~np.isnan(table).any(axis=1)]
    return Embedded(rows, [p.path for p in found], [p.identity for p in found])


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def select(
    photos: Sequence[datasets.LabelledPhoto], skipped: dict[Path, str], limit: int | None
) -> list[Person]:
    """The people to attack: everyone with a usable photo, those with several photos (who
    give type II) first, then by name; at most ``limit``."""
    by_person: dict[str, list[Path]] = {}
    for photo in photos:
        if photo.path not in skipped:
            by_person.setdefault(photo.identity, []).append(photo.path)
    people = [Person(name, sorted(paths)) for name, paths in by_person.items()]
    people.sort(key=lambda p: (len(p.photos) < 2, p.name))
    return people[:limit] if limit is not None else people


def judge_thresholds(
    model: FaceModel,
    embedded: Embedded,
    pairs: tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]] | None = None,
) -> Calibrated:
    """A judge's thresholds at :data:`RATES` from the collection's impostor pairs (LFW's
    mismatched pairs when the collection has a pairs file), and its genuine pairs; with no
    impostor pair (one person), the model's own calibrated thresholds."""
    name = model.name
    if pairs is not None:
        matched, mismatched = pairs
        ok = set(embedded.paths)

        def cosines(listed: list[tuple[Path, Path]]) -> np.ndarray:
            kept = [(a, b) for a, b in listed if a in ok and b in ok]
            if not kept:
                return np.zeros(0)
            left = embedded.of([a for a, _ in kept])
            right = embedded.of([b for _, b in kept])
            return np.sum(left * right, axis=1).astype(np.float64)

        impostor, genuine = cosines(mismatched), cosines(matched)
    else:
        impostor, genuine = calibration.pair_cosines(embedded.rows, embedded.identities)
    if not len(impostor):
        if not model.thresholds:
            raise FaceReconError(
                f"judge {name!r}: the collection gives no impostor pairs (photos of two or "
                "more people) to set its thresholds, and the model has no calibrated ones"
            )
        return Calibrated(name, dict(model.thresholds), impostor, genuine, "thresholds.json")
    return Calibrated(name, calibration.thresholds(impostor, RATES, MIN_ABOVE), impostor, genuine)


def sar(cosines: Sequence[float], thresholds: dict[str, float]) -> dict[str, float]:
    """The share of ``cosines`` at or above each threshold (NaN when there are none)."""
    return {r: calibration.share_at_least(np.asarray(cosines), t) for r, t in thresholds.items()}


def method_rows(
    method: str,
    scores: list[dict],
    judges: list[Calibrated],
    attacked: str,
    detector: str | None,
    seconds: float | None,
) -> list[dict[str, Any]]:
    """One row per judge of one method's per-person judge scores (see
    :func:`facerecon.judges.scoring.score`): SAR type I and II at each rate, mean cosines, the
    detector's face rate and the seconds per template."""
    # no detector (None) is never a key of the scores: no face rate then
    faces_found = [s[detector]["face"] for s in scores if detector in s]
    rows = []
    for judge in judges:
        type1 = [s[judge.name]["type1"] for s in scores if "type1" in s.get(judge.name, {})]
        type2 = [c for s in scores for c in s.get(judge.name, {}).get("type2", [])]
        rows.append(
            {
                "method": method,
                "judge": judge.name,
                "setting": "white-box" if judge.name == attacked else "transfer",
                "people": len(type1),
                "comparisons_type2": len(type2),
                **{f"sar1@{r}": v for r, v in sar(type1, judge.thresholds).items()},
                **{f"sar2@{r}": v for r, v in sar(type2, judge.thresholds).items()},
                "mean_type1": float(np.mean(type1)) if type1 else math.nan,
                "mean_type2": float(np.mean(type2)) if type2 else math.nan,
                "face_rate": float(np.mean(faces_found)) if faces_found else math.nan,
                "seconds_per_template": math.nan if seconds is None else seconds,
            }
        )
    return rows


def reference_rows(judges: list[Calibrated]) -> list[dict[str, Any]]:
    """The real photos' rows: TAR of the genuine pairs, the pair counts, the thresholds."""
    return [
        {
            "judge": j.name,
            "impostor_pairs": len(j.impostor),
            "genuine_pairs": len(j.genuine),
            **{f"threshold@{r}": t for r, t in j.thresholds.items()},
            **{f"tar@{r}": v for r, v in j.tar().items()},
            "mean_genuine": float(np.mean(j.genuine)) if len(j.genuine) else math.nan,
            "mean_impostor": float(np.mean(j.impostor)) if len(j.impostor) else math.nan,
            "thresholds_from": j.source,
        }
        for j in judges
    ]
