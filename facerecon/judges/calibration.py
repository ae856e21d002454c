"""Calibrating a face model's cosine thresholds on labelled photos.

Every photo of the labelled sources is aligned and embedded; every pair of photos of
different people is an impostor pair, of the same person a genuine pair. The threshold at
a false-match rate r is the smallest t with ``share(impostor cosine >= t) <= r``. On a
finite sample that set is open below, ``t > c[k]`` where ``c[k]`` is the (k+1)-th highest
impostor cosine and ``k = floor(r * n)`` (exact rational arithmetic), so t is the next
float64 above ``c[k]``: no interpolation, and cosines tied with ``c[k]`` all fall below t
(the measured rate can then be under r). Model plugins read the result back with
:func:`load_thresholds`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import FaceModel
from facerecon.faces import datasets
from facerecon.faces import photos as faces
from facerecon.faces.embedding import embed_stream, unit

RATES = ("1e-2", "1e-3")


def threshold_at(impostor: np.ndarray, rate: str) -> float:
    """The smallest t with at most ``rate`` of the impostor cosines >= t (see module doc)."""
    scores = np.sort(np.asarray(impostor, np.float64))[::-1]
    if not len(scores):
        raise FaceReconError("calibration needs impostor pairs: photos of two or more people")
    allowed = math.floor(Fraction(rate) * len(scores))
    if allowed >= len(scores):
        return -math.inf
    return float(np.nextafter(scores[allowed], np.inf))


def thresholds(
    impostor: np.ndarray, rates: Sequence[str] = RATES, min_above: int = 0
) -> dict[str, float]:
    """Each rate's threshold over the impostor cosines; a rate at which fewer than
    ``min_above`` impostor scores may pass is left out, except the first (the loosest)."""
    return {
        rate: threshold_at(impostor, rate)
        for rate in rates
        if math.floor(Fraction(rate) * len(impostor)) >= min_above or rate == rates[0]
    }


def share_at_least(cosines: np.ndarray, t: float) -> float:
    """The share of cosines >= t (the false-match rate for impostor cosines)."""
    cosines = np.asarray(cosines, np.float64)
    return float(np.mean(cosines >= t)) if len(cosines) else math.nan


def pair_cosines(embeddings: np.ndarray, identities: Sequence[str]) -> tuple[np.ndarray, ...]:
    """(impostor, genuine) cosines over every unordered pair of L2-normalized rows."""
    rows = unit(np.asarray(embeddings, np.float64))
    cosines = rows @ rows.T
    labels = np.asarray(identities, dtype=object)
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    return cosines[i, j][~same], cosines[i, j][same]


def summarize(
    embeddings: np.ndarray, identities: Sequence[str], rates: Sequence[str] = RATES
) -> dict[str, Any]:
    """Pair counts, thresholds, measured false-match rates and genuine statistics."""
    impostor, genuine = pair_cosines(embeddings, identities)
    found = thresholds(impostor, rates)
    return {
        "identities": len(set(identities)),
        "photos": len(identities),
        "impostor_pairs": len(impostor),
        "genuine_pairs": len(genuine),
        "thresholds": found,
        "measured_fmr": {r: share_at_least(impostor, t) for r, t in found.items()},
        "impostor": {
            "mean": float(impostor.mean()),
            "std": float(impostor.std()),
            "max": float(impostor.max()),
        },
        "genuine": {
            "n": len(genuine),
            "mean": float(genuine.mean()) if len(genuine) else None,
            "min": float(genuine.min()) if len(genuine) else None,
            "pass_rate": {
                r: share_at_least(genuine, t) if len(genuine) else None for r, t in found.items()
            },
        },
    }


def collect(sources: Sequence[str], base_dir: Path = Path(".")) -> list[datasets.LabelledPhoto]:
    """The labelled photos of several sources as one collection (a file listed twice once)."""
    photos: dict[Path, datasets.LabelledPhoto] = {}
    for source in sources:
        for photo in datasets.labelled(source, base_dir):
            # The same file twice would be a genuine pair of cosine 1.
            photos.setdefault(photo.path.resolve(), photo)
    return list(photos.values())


def embed_photos(
    model: FaceModel,
    photos: Sequence[datasets.LabelledPhoto],
    step: Callable[[], None] = lambda: None,
) -> tuple[np.ndarray, list[str], list[Path]]:
    """L2-normalized embeddings of the largest face of each photo, their identities, and the
    photos skipped because the model's detector found no face there."""

    def chips():
        for photo in photos:
            found = model.align(faces.read_photo(photo.path))
            yield found[0].image if found else None

    rows, kept = embed_stream(model, chips(), step)
    chosen = set(kept)
    identities = [p.identity for i, p in enumerate(photos) if i in chosen]
    skipped = [p.path for i, p in enumerate(photos) if i not in chosen]
    return rows, identities, skipped


def calibrate(
    model: FaceModel,
    sources: Sequence[str],
    base_dir: Path = Path("."),
    step: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """The calibration record of a model on labelled sources (what :func:`write` saves)."""
    photos = collect(sources, base_dir)
    embeddings, identities, skipped = embed_photos(model, photos, step)
    if len(set(identities)) < 2:
        raise FaceReconError(
            f"calibration needs faces of two or more people; found {len(set(identities))} "
            f"in {len(photos)} photos ({len(skipped)} without a face)"
        )
    summary = summarize(embeddings, identities)
    return {
        "model": model.name,
        "source": [datasets.provenance(s) for s in sources],
        "align": True,
        "method": "t = next float64 above the (floor(rate*n)+1)-th highest impostor cosine",
        **summary,
        "skipped": len(skipped),
        "skipped_photos": [path.name for path in skipped],
    }


def write(record: dict[str, Any], path: str | Path) -> None:
    """Save a calibration record as JSON."""
    Path(path).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")


def load_thresholds(path: str | Path) -> dict[str, float]:
    """The ``thresholds`` of a calibration JSON, or {} (with a warning if it is unreadable):
    model plugins call this at class definition, where an error would hide the plugin."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text())["thresholds"]
        return {str(rate): float(t) for rate, t in found.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        warnings.warn(f"{path}: no usable thresholds ({type(exc).__name__}: {exc})", stacklevel=2)
        return {}
