"""``stylegan``: images made by a pretrained face generator (MobileStyleGAN, FFHQ 1024).

What is optimized is the generator's latent, so every image is a photorealistic face: the
embedding loss moves it through the space of faces the generator can make. Parameters are
``u`` with ``w = w_mean + w_std * u`` (the mean and spread of the mapping network's output),
one ``u`` for every layer (space ``w``) or one per modulation layer (``w+``). The model's
chip is cut from the 1024-pixel frame by a fixed box, measured once per model with the
model's own alignment (FFHQ frames are aligned).

Because a generator cannot make every image, ``from_images`` does not give back an
arbitrary image: with ``start: project`` it fits the latent to the start images (the
spec's ``init``), otherwise it starts at the average face, a seeded sample, or a given latent.

Weights: fetched once from the PyPI wheel ``random-face`` (see :mod:`.weights`); they are
for non-commercial research or evaluation only (NVIDIA Source Code License-NC, FFHQ
CC BY-NC-SA 4.0), and runs with them carry a tag saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import keras
import numpy as np
import tensorflow as tf
from pydantic import Field, model_validator

from facerecon import Parameterization, Params, hookimpl
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import PrepareContext

from . import framing, generator, weights


class StyleGANParams(Params):
    space: Literal["w", "w+"] = Field(
        "w", description="one latent for all layers (w), or one per modulation layer (w+)"
    )
    prior: float = Field(
        0.002, ge=0, le=1e3, allow_inf_nan=False,
        description="weight of the prior mean(u^2) on the standardized latent",
    )  # fmt: skip
    pull: float = Field(
        0.05, ge=0, le=1e3, allow_inf_nan=False,
        description="w+ only: weight of the pull of each layer's latent toward their mean "
        "(free w+ leaves the face manifold)",
    )  # fmt: skip
    start: Literal["average", "sample", "project", "latent"] = Field(
        "average",
        description="the first latent: the average face, a seeded sample, the projection of "
        "the spec's init images, or the file `latent`",
    )
    truncation: float = Field(
        0.7, gt=0, le=1, allow_inf_nan=False,
        description="start `sample`: w = w_mean + truncation * (w - w_mean)",
    )  # fmt: skip
    latent: str | None = Field(
        None, description="start `latent`: a .npy of w, (512,), (B, 512) or (B, layers, 512)"
    )
    project_steps: int = Field(
        40, ge=1, le=2000, description="start `project`: Adam steps of the pixel fit"
    )
    weights: str | None = Field(
        None, description="a folder of the four IR files; default: fetched once into the cache"
    )

    @model_validator(mode="after")
    def _latent_file(self) -> StyleGANParams:
        if (self.start == "latent") != (self.latent is not None):
            raise ValueError("give `latent` exactly when start is 'latent'")
        return self


class StyleGAN(Parameterization):
    """A face generator's latent as the image parameterization (see the module docstring)."""

    name = "stylegan"
    Params = StyleGANParams
    terms = weights.TERMS
    # peak memory per batch element of a compiled step, synthesis at 1024 and its gradient
    # (benchmarks/results.json: stylegan, dlib-resnet, "GiB per element": 2.2)
    bytes_per_image = int(2.2 * 2**30)

    def __init__(self, params: StyleGANParams | None = None) -> None:
        super().__init__(params)
        self._generator: generator.MobileStyleGAN | None = None
        self._box: framing.Box | None = None
        self._seed = 0

    @property
    def generator(self) -> generator.MobileStyleGAN:
        """The generator, loaded (and its weights fetched) at first use."""
        if self._generator is None:
            self._generator = generator.load(weights.weights_folder(self.params.weights))
            stats = self._generator.statistics()
            with tf.init_scope():  # eager, even when first needed inside a trace
                self._mean = tf.constant(stats["mean"][None, None])
                self._std = tf.constant(stats["std"][None, None])
        return self._generator

    def prepare(self, context: PrepareContext) -> None:
        self._seed = context.seed
        self._size = context.model.input_size
        self._box = framing.model_box(context.model, self._sample_frames)

    def _sample_frames(self, count: int) -> np.ndarray:
        u = self._sampled(count, framing.TRUNCATION, seed=1)
        synthesize = tf.function(self._frames_of)
        return np.concatenate([synthesize(tf.constant(u[i : i + 1])).numpy() for i in range(count)])

    def _layers(self) -> int:
        return self.generator.layers if self.params.space == "w+" else 1

    def _shape(self, count: int) -> tuple[int, int, int]:
        return (count, self._layers(), generator.LATENT)

    def _sampled(self, count: int, truncation: float, seed: int) -> np.ndarray:
        z = np.random.default_rng(seed).standard_normal((count, generator.LATENT))
        w = self.generator.map(tf.constant(z, tf.float32))
        u = truncation * (w - self._mean[:, 0]) / self._std[:, 0]
        return np.repeat(u.numpy()[:, None], self._layers(), axis=1).astype(np.float32)

    def sample(self, count: int, seed: int) -> np.ndarray:
        """Seeded samples z -> w, truncated toward the average by ``truncation``."""
        return self._sampled(count, self.params.truncation, seed)

    def _from_file(self, count: int) -> np.ndarray:
        path = Path(self.params.latent).expanduser()
        try:
            w = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise FaceReconError(f"cannot read latent file {path}: {error}") from None
        layers = self.generator.layers
        if w.shape == (generator.LATENT,):
            w = np.broadcast_to(w, (count, generator.LATENT))
        if w.ndim == 2 and w.shape == (count, generator.LATENT):
            w = np.repeat(w[:, None], self._layers(), axis=1)
        if w.shape != self._shape(count):
            raise FaceReconError(
                f"latent file {path} holds shape {w.shape}; expected (512,), ({count}, 512)"
                + (f" or ({count}, {layers}, 512)" if self.params.space == "w+" else "")
            )
        if not np.isfinite(w).all():
            raise FaceReconError(f"latent file {path} holds values that are not finite")
        u = (w - self._mean.numpy()) / self._std.numpy()
        return u.astype(np.float32)

    def _project(self, images: np.ndarray) -> np.ndarray:
        """Latents whose chips fit ``images`` in the pixels (Adam, from the average face)."""
        u = tf.Variable(np.zeros(self._shape(len(images)), np.float32))
        target = tf.constant(images, tf.float32)
        optimizer = keras.optimizers.Adam(0.05)

        @tf.function
        def step() -> None:
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(self.to_images(u) - target))
                loss += tf.reduce_sum(self.penalty(u)) / len(images)
            optimizer.apply_gradients([(tape.gradient(loss, u), u)])

        for _ in range(self.params.project_steps):
            step()
        return u.numpy()

    def from_images(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if self._box is None:
            raise FaceReconError("the stylegan parameterization is used before prepare()")
        self._size = images.shape[1]
        count, start = len(images), self.params.start
        if start == "sample":
            return self.sample(count, self._seed)
        if start == "latent":
            return self._from_file(count)
        if start == "project":
            return self._project(images)
        return np.zeros(self._shape(count), np.float32)

    def _frames_of(self, params: tf.Tensor) -> tf.Tensor:
        gan = self.generator  # loads the statistics too
        styles = self._mean + self._std * params
        styles = tf.broadcast_to(styles, [tf.shape(params)[0], gan.layers, generator.LATENT])
        return gan.synthesize(styles)

    def to_images(self, params: tf.Tensor) -> tf.Tensor:
        return framing.crop(self._frames_of(params), self._box, self._size)

    def frames(self, params: tf.Tensor) -> tf.Tensor:
        return self._frames_of(params)

    def penalty(self, params: tf.Tensor) -> tf.Tensor:
        prior = self.params.prior * tf.reduce_mean(tf.square(params), axis=[1, 2])
        if self.params.space == "w" or not self.params.pull:
            return prior
        spread = params - tf.reduce_mean(params, axis=1, keepdims=True)
        return prior + self.params.pull * tf.reduce_mean(tf.square(spread), axis=[1, 2])


@hookimpl
def register_parameterizations(register):
    register(StyleGAN)
