"""Random embeddings to train on, drawn around the model's embeddings of real faces.

``gaussian``: a Gaussian fitted to the real faces' embeddings (mean and a shrunk covariance,
since a few dozen faces cannot pin down a full covariance in 128 or 512 dimensions).
``directions``: uniformly random directions scaled to the faces' typical (median) norm.
``photos``: the real faces' own embeddings (each photo and its mirror image), drawn with
their photos, so a training can hold each image to the photo its template came from
(``solver.photo_weight``), as NbNet (Mai et al. 2018) trains on real faces.
``generated``: the parameterization's own seeded samples (a face generator's latents) with
the model's templates of their images, made once and cached in chunks (a 1024-pixel frame
costs seconds here, so a training resumes on the samples made before); for the ``latent``
generator kind, which learns the way back from template to latent (FaceTI's idea).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import tensorflow as tf
from pydantic import BaseModel, ConfigDict, Field, model_validator

from facerecon.core.cache import arrays_sha256, cached_arrays
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import Parameterization


class SamplingParams(BaseModel):
    """How training embeddings are drawn (``solver.sampling`` in a spec)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["gaussian", "directions", "photos", "generated"] = Field(
        "gaussian",
        description="fitted Gaussian, random directions at the typical norm, the real "
        "faces' own embeddings drawn with their photos (and mirror images), or the "
        "parameterization's own samples drawn with their latents",
    )
    samples: int = Field(
        1024, ge=2, le=1_000_000, description="generated only: how many samples to make (cached)"
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


class PairedSampler:
    """Draws embeddings together with what each came from (a photo, a latent)."""

    def __init__(self, embeddings: np.ndarray, paired: np.ndarray) -> None:
        stats = EmbeddingSampler("gaussian", embeddings)
        self.mean, self.variance = stats.mean, stats.variance
        self.embeddings = np.asarray(embeddings, np.float32)
        self.paired = np.asarray(paired, np.float32)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` (embedding, paired) rows drawn without replacement within a batch."""
        rows = rng.choice(len(self.embeddings), n, replace=n > len(self.embeddings))
        return self.embeddings[rows], self.paired[rows]


class PhotoSampler(PairedSampler):
    """Draws real faces' embeddings together with their photos (``kind: photos``)."""

    def __init__(self, embeddings: np.ndarray, photos: np.ndarray) -> None:
        if len(embeddings) < 2:
            raise FaceReconError(
                f"sampling: {len(embeddings)} real face(s) to train on; need at least 2"
            )
        super().__init__(embeddings, photos)

    @property
    def photos(self) -> np.ndarray:
        return self.paired


class GeneratedSampler(PairedSampler):
    """Draws the templates of a parameterization's samples with their parameters."""

    @property
    def latents(self) -> np.ndarray:
        return self.paired


#: samples made, embedded and cached together
CHUNK = 32


def generated(
    param: Parameterization,
    forward: Callable[[np.ndarray, list[str]], tuple[np.ndarray, dict]],
    model: str,
    count: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> GeneratedSampler:
    """``count`` seeded samples of ``param`` (prepared for ``model``) and ``model``'s
    templates of their images, chunk by chunk from the cache or made now; ``progress`` gets
    (samples ready, count) after every chunk."""
    render = tf.function(param.to_images)
    embeddings, latents = [], []
    for start in range(0, count, CHUNK):
        chunk_seed = int(np.random.SeedSequence([seed, start]).generate_state(1)[0])
        latent = param.sample(min(CHUNK, count - start), chunk_seed)
        if latent is None:
            raise FaceReconError(
                f"sampling.kind: 'generated' needs a parameterization with samples of its own "
                f"(e.g. stylegan); {param.name!r} has none"
            )
        latent = np.asarray(latent, np.float32)

        def compute(latent: np.ndarray = latent) -> dict[str, np.ndarray]:
            images = np.concatenate(
                [render(tf.constant(latent[i : i + 4])).numpy() for i in range(0, len(latent), 4)]
            )
            return {"embeddings": forward(images, [])[0].astype(np.float32)}

        # The latents' digest names the samples: the parameterization's settings that change
        # them (space, truncation, seed) change it, the others (its prior...) do not.
        key = f"{param.name} {getattr(param.params, 'weights', None)} {model} " + arrays_sha256(
            {"latent": latent}
        )
        made = cached_arrays("samples", f"{param.name}-{model}", key, compute)
        embeddings.append(made["embeddings"])
        latents.append(latent)
        if progress is not None:
            progress(start + len(latent), count)
    return GeneratedSampler(np.concatenate(embeddings), np.concatenate(latents))


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
