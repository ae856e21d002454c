"""One-pass reconstruction with a stored generator: embeddings (or a photo) in, images out."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage.io

from facerecon.core.errors import FaceReconError
from facerecon.faces import photos as faces
from facerecon.faces.embeddings import read_npy

from . import store
from .generator import Generator


@dataclass
class Generated:
    """What :func:`generate` made, where it wrote it, and how fast."""

    images: np.ndarray  # (N, S, S, 3) in [0, 1]
    paths: list[Path]
    seconds: float
    generator: Generator

    @property
    def images_per_second(self) -> float:
        return len(self.images) / self.seconds if self.seconds > 0 else float("inf")


def read_embeddings(path: str | Path) -> np.ndarray:
    """An .npy of one (D,) or many (N, D) embeddings."""
    return read_npy(path)


def output_paths(output: str | Path, count: int) -> list[Path]:
    """``output`` for one image; ``NAME-000.png``, ``NAME-001.png``... for several."""
    output = Path(output)
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i:03d}{output.suffix}") for i in range(count)]


def write_images(images: np.ndarray, paths: list[Path]) -> None:
    for image, path in zip(images, paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        skimage.io.imsave(path, (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))


def generate(
    generator: str | Generator,
    embedding: str | Path | np.ndarray | None = None,
    *,
    photo: str | None = None,
    guide: str | None = None,
    align: bool = True,
    output: str | Path | None = None,
    batch: int = 32,
) -> Generated:
    """Reconstruct in one pass from embeddings (an .npy or an array) or from a photo's face.

    ``generator`` is an MLflow model URI (``runs:/<run_id>/generator``), a model folder or
    a loaded :class:`Generator`; a guided generator needs ``guide`` (a photo or a crop),
    unless it makes its own (``nearest``: each template's nearest strangers).
    """
    if (embedding is None) == (photo is None):
        raise FaceReconError("give exactly one of an embedding file or a photo to embed")
    source = generator if isinstance(generator, str) else "generator"
    gen = store.load(generator) if isinstance(generator, str) else generator
    own = bool(gen.config.nearest)
    if guide is not None and (own or not gen.guided):
        makes = "makes its own guides" if own else "takes no guide image"
        raise FaceReconError(f"{source}: the {gen.config.describe()} {makes}")
    if gen.guided and not own and guide is None:
        raise FaceReconError(f"{source}: the {gen.config.describe()} needs a guide image")
    face_model = None
    if photo is not None or guide is not None or own:
        from facerecon.api import model  # only when a photo must be embedded or aligned

        face_model = model(gen.config.model)
        gen.check_model(face_model, source)
    if photo is not None:
        from facerecon.engine.runner import embed_photo

        rows = embed_photo(face_model, photo, align)[0][None]
        where = photo
    elif isinstance(embedding, np.ndarray):
        rows, where = embedding, "embedding"
    else:
        rows, where = read_embeddings(embedding), str(embedding)
    guide_chip = None
    if guide is not None:
        guide_chip = faces.chip(face_model, faces.read_image(guide), align, guide)[0]
    if own:
        rows = gen.check_inputs(rows, None, where, own=True)[0]
        guide_chip = gen.config.own_guides(face_model).means(rows)
    rows, guides = gen.check_inputs(rows, guide_chip, where)
    # One batch first, so the timing below is of generation, not of tracing the graph.
    gen.generate(rows[:batch], None if guides is None else guides[:batch], batch)
    start = time.perf_counter()
    images = gen.generate(rows, guides, batch)
    seconds = time.perf_counter() - start
    paths = []
    if output is not None:
        paths = output_paths(output, len(images))
        write_images(images, paths)
    return Generated(images, paths, seconds, gen)
