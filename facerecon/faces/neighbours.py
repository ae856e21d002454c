"""Start images made from a template alone: the mean face of the template's nearest
other people in a public collection.

A template says who someone resembles before it says who they are: its nearest neighbours
among strangers share the person's sex, age, skin and build. Their mean is a start image
that already agrees with the template on all of that, and the solve only has to add the
identity. Every neighbour is one the optimized model itself rejects as the person (below
its most lenient calibrated threshold), so no photo of the person enters the image even
when the collection holds one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facerecon.core.cache import cached_arrays
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import FaceModel
from facerecon.faces import photos as faces
from facerecon.faces.embedding import embed_stream, unit


def collection_index(
    model: FaceModel, source: str, align: bool, base_dir: Path = Path(".")
) -> dict[str, np.ndarray]:
    """``{"embeddings": (N, D) unit rows, "images": (N,) each row's image number in the
    source}`` for every image with a face; cached for built-in collections."""

    def compute() -> dict[str, np.ndarray]:
        # embedded as the photos stream by: a large folder never sits in memory
        def chips():
            for image in faces.each_image(source, base_dir):
                try:
                    yield faces.chip(model, image, align, source)[0]
                except FaceReconError:
                    yield None

        rows, numbers = embed_stream(model, chips())
        if not numbers:
            raise FaceReconError(f"{source}: no face found by {model.name} in any of its images")
        return {"embeddings": rows, "images": np.array(numbers)}

    if not source.startswith("builtin:"):
        return compute()
    key = f"{model.params.model_dump_json()}|{source}|{align}"
    return cached_arrays("neighbours", model.name, key, compute)


def strangers_threshold(model: FaceModel) -> float:
    """The cosine below which ``model`` calls two faces different people at every
    calibrated false-match rate (its most lenient threshold)."""
    if not model.thresholds:
        raise FaceReconError(
            f"init.nearest: model {model.name!r} has no calibrated thresholds, so its nearest "
            "faces could be the person themselves; use a calibrated model or drop init.nearest"
        )
    return min(model.thresholds.values())


def nearest(
    templates: np.ndarray, embeddings: np.ndarray, k: int, below: float
) -> list[np.ndarray]:
    """Per template, the rows of the ``k`` embeddings closest in cosine among those below
    ``below`` (closest first)."""
    cosines = unit(np.asarray(templates, np.float64)) @ embeddings.T.astype(np.float64)
    picks = []
    for row in cosines:
        allowed = np.flatnonzero(row < below)
        if len(allowed) < k:
            raise FaceReconError(
                f"init.nearest: {k} wanted, but the collection has only {len(allowed)} faces "
                "the model calls other people; lower init.nearest or use a larger collection"
            )
        picks.append(allowed[np.argsort(-row[allowed], kind="stable")[:k]])
    return picks


class Strangers:
    """A collection's faces, ready to give any template the mean of its ``k`` nearest
    strangers; chips are read on first need and kept (``preload`` reads them all)."""

    def __init__(
        self, model: FaceModel, source: str, align: bool, k: int, base_dir: Path = Path(".")
    ) -> None:
        self.model, self.source, self.align, self.k, self.base_dir = (
            model, source, align, k, base_dir
        )  # fmt: skip
        self.index = collection_index(model, source, align, base_dir)
        self.below = strangers_threshold(model)
        self._chips: dict[int, np.ndarray] = {}

    def _load(self, numbers: set[int]) -> None:
        missing = numbers - set(self._chips)
        if not missing:
            return
        for number, image in enumerate(faces.each_image(self.source, self.base_dir)):
            if number in missing:
                self._chips[number] = faces.chip(self.model, image, self.align, self.source)[0]

    def preload(self) -> Strangers:
        """Read every face now (for many calls, e.g. every training step)."""
        self._load({int(n) for n in self.index["images"]})
        return self

    def means(self, templates: np.ndarray) -> np.ndarray:
        """(T, H, W, 3): per template, the mean chip of its ``k`` nearest strangers."""
        picks = nearest(templates, self.index["embeddings"], self.k, self.below)
        numbers = [[int(self.index["images"][row]) for row in pick] for pick in picks]
        self._load({n for pick in numbers for n in pick})
        means = [np.mean([self._chips[n] for n in pick], axis=0) for pick in numbers]
        return np.stack(means).astype(np.float32)


def nearest_means(
    model: FaceModel,
    source: str,
    align: bool,
    templates: np.ndarray,
    k: int,
    base_dir: Path = Path("."),
) -> np.ndarray:
    """(T, H, W, 3): per template, the mean chip of its ``k`` nearest strangers in
    ``source``."""
    return Strangers(model, source, align, k, base_dir).means(templates)
