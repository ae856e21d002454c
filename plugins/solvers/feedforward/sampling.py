"""Random embeddings to train on, drawn around the model's embeddings of real faces.

``gaussian``: a Gaussian fitted to the real faces' embeddings (mean and a shrunk covariance,
since a few dozen faces cannot pin down a full covariance in 128 or 512 dimensions).
``directions``: uniformly random directions scaled to the faces' typical (median) norm.
``photos``: the real faces' own embeddings (each photo and its mirror image), drawn with
their photos, so a training can hold each image to the photo its template came from
(``solver.photo_weight``), as NbNet (Mai et al. 2018) trains on real faces.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from facerecon.core.errors import FaceReconError


class SamplingParams(BaseModel):
    """How training embeddings are drawn (``solver.sampling`` in a spec)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["gaussian", "directions", "photos"] = Field(
        "gaussian",
        description="fitted Gaussian, random directions at the typical norm, or the real "
        "faces' own embeddings drawn with their photos (and mirror images)",
    )
    images: str = Field("builtin:lfw", description="the real faces the distribution comes from")
    align: bool = Field(False, description="detect and align those faces")
    subset: tuple[int, int] | None = Field(
        (0, 50),
        description="use faces[start:stop] only, so the others can be held out; null = all",
    )
    shrinkage: float = Field(
        0.1, ge=0, le=1, description="covariance pulled this far towards its mean variance"
    )

    @model_validator(mode="after")
    def _subset(self) -> SamplingParams:
        if self.subset is not None and not 0 <= self.subset[0] < self.subset[1]:
            raise ValueError("subset is [start, stop] with 0 <= start < stop")
        return self


class EmbeddingSampler:
    """Draws batches of embeddings from statistics of real faces' embeddings."""

    def __init__(self, kind: str, faces: np.ndarray, shrinkage: float = 0.1) -> None:
        if len(faces) < 2:
            raise FaceReconError(
                f"sampling: {len(faces)} real face(s) to fit embeddings to; need at least 2"
            )
        faces = np.asarray(faces, np.float64)
        self.kind = kind
        self.mean = faces.mean(axis=0)
        self.variance = faces.var(axis=0) + 1e-12
        self.norm = float(np.median(np.linalg.norm(faces, axis=1)))
        cov = np.cov(faces, rowvar=False)
        cov = (1 - shrinkage) * cov + shrinkage * np.mean(np.diag(cov)) * np.eye(len(cov))
        # eigh rather than Cholesky: with shrinkage 0 the covariance is singular.
        values, vectors = np.linalg.eigh(cov)
        self._factor = vectors * np.sqrt(np.clip(values, 0, None))

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, None]:
        """``n`` embeddings and no photos (what a training step takes from any sampler)."""
        return self.sample(rng, n), None

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` embeddings (n, D), float32."""
        z = rng.standard_normal((n, len(self.mean)))
        if self.kind == "gaussian":
            out = self.mean + z @ self._factor.T
        else:
            out = self.norm * z / np.linalg.norm(z, axis=1, keepdims=True)
        return out.astype(np.float32)


class PhotoSampler:
    """Draws real faces' embeddings together with their photos (``kind: photos``)."""

    def __init__(self, embeddings: np.ndarray, photos: np.ndarray) -> None:
        if len(embeddings) < 2:
            raise FaceReconError(
                f"sampling: {len(embeddings)} real face(s) to train on; need at least 2"
            )
        stats = EmbeddingSampler("gaussian", embeddings)
        self.mean, self.variance = stats.mean, stats.variance
        self.embeddings = np.asarray(embeddings, np.float32)
        self.photos = np.asarray(photos, np.float32)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` (embedding, photo) pairs drawn without replacement within a batch."""
        rows = rng.choice(len(self.embeddings), n, replace=n > len(self.embeddings))
        return self.embeddings[rows], self.photos[rows]


def real_faces(images: np.ndarray, subset: tuple[int, int] | None, source: str) -> np.ndarray:
    """The chips a sampler is fitted to: ``images[start:stop]``, checked not to be empty."""
    if subset is None:
        return images
    start, stop = subset
    if start >= len(images):
        raise FaceReconError(
            f"sampling.subset: [{start}, {stop}] but {source} holds {len(images)} face(s)"
        )
    return images[start:stop]
