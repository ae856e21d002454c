"""The two generator networks of the paper's Fig. 3, and their initializations (Sec. 5.2).

``embedding`` (Fig. 3a): a dense layer with ReLU maps the embedding to a ``base x base x
filters`` tensor, then 5x5 stride-2 transposed convolutions with ReLU double it ``depth``
times, the last one producing the 3 channels; the canvas is cropped to the model's input.

``guided`` (Fig. 3b): the guide, padded to the canvas, goes through ``depth`` stride-2
convolutions; each of their outputs is depth-concatenated with the decoder tensor of the same
size, the last decoder tensor with the padded guide itself, and a last convolution makes the
image.

A sigmoid keeps the output in [0, 1], where the face models take their input.

``latent`` (see :mod:`.latent`): an MLP from the embedding to the parameters of the spec's
parameterization (a face generator's latent), rendered by it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import keras
import numpy as np
import tensorflow as tf
from pydantic import BaseModel, ConfigDict, Field, model_validator

from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import FaceModel, Parameterization
from facerecon.faces.embeddings import check_rows, numeric
from facerecon.faces.neighbours import Strangers

from . import latent

KERNEL = 5
#: a latent generator's images rendered per call (a 1024-pixel frame each)
RENDER_BATCH = 4
# Quadratic B-spline (Chaikin) subdivision: each output pixel takes 3/4 of its nearer and 1/4
# of its farther input pixel. In a 5-tap kernel at stride 2 with "same" padding, these taps
# put output pixel n at input position (n - 1/2) / 2, centred; the fifth tap stays zero.
SMOOTH_TAPS = np.array([1.0, 3.0, 3.0, 1.0, 0.0]) / 4.0


class NearestGuides(BaseModel):
    """Each template's own guide: the mean of its ``k`` nearest strangers in a collection
    (as ``init.nearest`` gives the iterative solver its start image)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    images: str = Field("builtin:radar", description="the public collection of faces")
    align: bool = Field(True, description="align the collection's faces")
    k: int = Field(32, ge=1, description="strangers averaged per template")


class GeneratorParams(BaseModel):
    """The generator's architecture and initialization (``solver.generator`` in a spec)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["embedding", "guided", "latent"] = Field(
        "embedding",
        description="embedding only (Fig. 3a), embedding + guide (Fig. 3b), or embedding to "
        "the parameterization's latent, rendered by it (a face generator's)",
    )
    hidden: int = Field(1024, ge=8, le=8192, description="latent only: units per hidden layer")
    hidden_layers: int = Field(2, ge=0, le=8, description="latent only: hidden ReLU layers")
    filters: int = Field(16, ge=1, le=512, description="channels of every decoder layer")
    depth: int = Field(5, ge=1, le=8, description="stride-2 transposed convolutions")
    guide_filters: int = Field(16, ge=1, le=512, description="channels of the guide's convs")
    init: Literal["interpolation", "plain"] = Field(
        "interpolation",
        description="smooth interpolation + Xavier mixing, gray output (Sec. 5.2); or Glorot",
    )
    residual: bool = Field(
        False,
        description="guided only: the image is the guide plus a learned change (tanh, up to "
        "+-0.5), so the guide's detail passes through untouched",
    )
    keep_colour: bool = Field(
        False,
        description="guided only: shift each output channel to the guide's mean (dlib barely "
        "sees colour, so without an anchor the one-pass images drift in tint)",
    )
    nearest: NearestGuides | None = Field(
        None,
        description="guided only: each template's guide is the mean of its nearest strangers "
        "(training, generation and evaluation alike) instead of the spec's guide images",
    )

    @model_validator(mode="after")
    def _nearest(self) -> GeneratorParams:
        if self.nearest is not None and self.kind != "guided":
            raise ValueError("`nearest` gives guides: it goes with kind: guided")
        if self.residual and self.kind != "guided":
            raise ValueError("`residual` adds to the guide: it goes with kind: guided")
        if self.keep_colour and self.kind != "guided":
            raise ValueError("`keep_colour` keeps the guide's colour: it goes with kind: guided")
        return self


@dataclass(frozen=True)
class GeneratorConfig:
    """What a generator is and which face model it was made for; saved with its weights."""

    kind: str
    filters: int
    depth: int
    guide_filters: int
    init: str
    model: str
    input_size: int
    embedding_size: int
    keep_colour: bool = False
    residual: bool = False
    #: NearestGuides as a dict, or None: the guides are given by the caller
    nearest: dict | None = None
    hidden: int = 1024
    hidden_layers: int = 2
    #: latent only: the parameters' shape per image, and the parameterization (name and
    #: parameters) that renders them
    latent_shape: tuple[int, ...] | None = None
    parameterization: dict | None = None

    @classmethod
    def of(
        cls,
        params: GeneratorParams,
        model: FaceModel,
        parameterization: Parameterization | None = None,
    ) -> GeneratorConfig:
        """The configuration of ``params`` for ``model``; a latent generator also records
        the ``parameterization`` that renders its output."""
        extra: dict = {}
        if params.kind == "latent":
            if parameterization is None:
                raise ValueError("a latent generator needs the parameterization it feeds")
            extra["latent_shape"] = latent.latent_shape(parameterization, "solver.generator")
            extra["parameterization"] = {
                "name": parameterization.name,
                **parameterization.params.model_dump(mode="json"),
            }
        return cls(
            **params.model_dump(),
            **extra,
            model=model.name,
            input_size=model.input_size,
            embedding_size=model.embedding_size,
        )

    @classmethod
    def from_dict(cls, data: dict) -> GeneratorConfig:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if fields.get("latent_shape") is not None:  # JSON gives lists
            fields["latent_shape"] = tuple(fields["latent_shape"])
        return cls(**fields)

    def own_guides(self, model: FaceModel, base_dir: Path = Path(".")) -> Strangers | None:
        """The :class:`Strangers` that give this generator its guides (each template's
        nearest strangers, the same in training and in use), or None when the caller gives
        them (the spec's guide images, ``--guide``)."""
        if not self.nearest:
            return None
        n = self.nearest
        return Strangers(model, n["images"], n["align"], n["k"], base_dir)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def guided(self) -> bool:
        return self.kind == "guided"

    @property
    def latent(self) -> bool:
        return self.kind == "latent"

    @property
    def base(self) -> int:
        """Side of the dense layer's tensor: the canvas is ``base * 2**depth``."""
        return math.ceil(self.input_size / 2**self.depth)

    @property
    def canvas(self) -> int:
        return self.base * 2**self.depth

    def architecture(self) -> dict:
        """The keys that decide which weights fit (``init`` only decides their start)."""
        return {k: v for k, v in self.to_dict().items() if k != "init"}

    def describe(self) -> str:
        if self.latent:
            name = (self.parameterization or {}).get("name")
            return (
                f"latent generator ({self.hidden_layers} x {self.hidden} hidden, to {name}'s "
                f"{'x'.join(map(str, self.latent_shape or ()))} latent) for {self.model} "
                f"({self.input_size}x{self.input_size} in, {self.embedding_size}-d)"
            )
        guide = f", guide {self.guide_filters} filters" if self.guided else ""
        if self.nearest:
            guide += f" from the {self.nearest['k']} nearest strangers in {self.nearest['images']}"
        return (
            f"{self.kind} generator ({self.filters} filters, depth {self.depth}{guide}) for "
            f"{self.model} ({self.input_size}x{self.input_size} in, {self.embedding_size}-d)"
        )


def smooth_kernel() -> np.ndarray:
    """The 5x5 spatial kernel of a smooth 2x upsampling (separable, sums to 4)."""
    return np.outer(SMOOTH_TAPS, SMOOTH_TAPS)


def xavier(rng: np.random.Generator, fan_in: int, fan_out: int, shape: tuple) -> np.ndarray:
    """Xavier/Glorot-uniform values for a filter-to-filter mixing matrix."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape)


def interpolation_kernel(rng: np.random.Generator, in_channels: int, out_channels: int):
    """A transposed-convolution kernel (5, 5, out, in): smooth upsampling of every input
    channel, mixed filter-to-filter by a random Xavier matrix."""
    mixing = xavier(rng, in_channels, out_channels, (out_channels, in_channels))
    return (smooth_kernel()[:, :, None, None] * mixing[None, None]).astype(np.float32)


def gray_kernel(rng: np.random.Generator, in_channels: int, spatial: np.ndarray):
    """A last-layer kernel (5, 5, 3, in) giving R = G = B: the image starts out gray."""
    mixing = xavier(rng, in_channels, 1, (1, in_channels))
    kernel = spatial[:, :, None, None] * mixing[None, None]
    return np.repeat(kernel, 3, axis=2).astype(np.float32)


@keras.saving.register_keras_serializable(package="facerecon")
class GuideColour(keras.layers.Layer):
    """[image, guide] -> the image with each channel's mean moved to the guide's, in [0, 1]."""

    def call(self, inputs):
        image, guide = inputs
        shift = keras.ops.mean(guide, axis=(1, 2), keepdims=True) - keras.ops.mean(
            image, axis=(1, 2), keepdims=True
        )
        return keras.ops.clip(image + shift, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="facerecon")
class GuidePlus(keras.layers.Layer):
    """[change in [-1, 1], guide] -> the guide plus half the change, in [0, 1]."""

    def call(self, inputs):
        change, guide = inputs
        return keras.ops.clip(guide + 0.5 * change, 0.0, 1.0)


def _crop(config: GeneratorConfig) -> tuple[int, int]:
    extra = config.canvas - config.input_size
    return extra // 2, extra - extra // 2


def build_network(
    config: GeneratorConfig,
    mean: np.ndarray | None = None,
    variance: np.ndarray | None = None,
    seed: int = 0,
) -> keras.Model:
    """The Keras generator: embeddings (N, D) [and guides (N, S, S, 3)] -> images (N, S, S, 3).

    ``mean``/``variance`` standardize the embedding inside the network (the statistics of
    the faces the training embeddings are drawn around); defaults leave it unchanged.
    """
    dim, f, depth = config.embedding_size, config.filters, config.depth
    seeds = iter(range(seed * 1000, seed * 1000 + 1000))

    def glorot() -> keras.initializers.Initializer:
        return keras.initializers.GlorotUniform(seed=next(seeds))

    mean = np.zeros(dim, np.float32) if mean is None else np.asarray(mean, np.float32)
    variance = np.ones(dim, np.float32) if variance is None else np.asarray(variance, np.float32)
    if config.latent:
        return latent.build_network(
            dim, config.latent_shape, config.hidden, config.hidden_layers, mean, variance, seed
        )
    embedding = keras.Input((dim,), name="embedding")
    inputs = [embedding]
    x = keras.layers.Normalization(mean=mean, variance=variance, name="standardize")(embedding)
    x = keras.layers.Dense(
        config.base * config.base * f, activation="relu", kernel_initializer=glorot(), name="dense"
    )(x)
    x = keras.layers.Reshape((config.base, config.base, f), name="reshape")(x)

    low, high = _crop(config)
    guide_maps: list = []
    if config.guided:
        guide = keras.Input((config.input_size, config.input_size, 3), name="guide")
        inputs.append(guide)
        g = keras.layers.ZeroPadding2D(((low, high), (low, high)), name="guide_pad")(guide)
        guide_maps.append(g)
        for i in range(depth):
            g = keras.layers.Conv2D(
                config.guide_filters,
                KERNEL,
                strides=2,
                padding="same",
                activation="relu",
                kernel_initializer=glorot(),
                name=f"guide_down{i + 1}",
            )(g)
            guide_maps.append(g)
        x = keras.layers.Concatenate(name=f"join{depth}")([x, guide_maps[depth]])

    for i in range(depth):
        last = i == depth - 1
        to_image = last and not config.guided
        x = keras.layers.Conv2DTranspose(
            3 if to_image else f,
            KERNEL,
            strides=2,
            padding="same",
            activation=None if to_image else "relu",
            kernel_initializer=glorot(),
            name=f"up{i + 1}",
        )(x)
        if config.guided:
            level = depth - i - 1
            x = keras.layers.Concatenate(name=f"join{level}")([x, guide_maps[level]])
    if config.guided:
        x = keras.layers.Conv2D(
            3, KERNEL, padding="same", kernel_initializer=glorot(), name="to_image"
        )(x)
    if config.residual:
        x = keras.layers.Activation("tanh", name="change")(x)
        x = keras.layers.Cropping2D(((low, high), (low, high)), name="crop")(x)
        image = GuidePlus(name="guide_plus")([x, inputs[1]])
    else:
        x = keras.layers.Activation("sigmoid", name="sigmoid")(x)
        image = keras.layers.Cropping2D(((low, high), (low, high)), name="crop")(x)
    if config.keep_colour:
        image = GuideColour(name="guide_colour")([image, inputs[1]])
    network = keras.Model(inputs, image, name=f"{config.kind}_generator")
    if config.init == "interpolation":
        _interpolation_init(network, config, np.random.default_rng(seed))
    return network


def _interpolation_init(network: keras.Model, config: GeneratorConfig, rng) -> None:
    """Sec. 5.2: transposed convolutions start as smooth upsampling with random Xavier
    filter-to-filter mixing, and the image starts out gray (R = G = B)."""
    for i in range(config.depth):
        layer = network.get_layer(f"up{i + 1}")
        _, _, out_channels, in_channels = layer.kernel.shape
        if out_channels == 3 and not config.guided:
            layer.kernel.assign(gray_kernel(rng, in_channels, smooth_kernel()))
        else:
            layer.kernel.assign(interpolation_kernel(rng, in_channels, out_channels))
        layer.bias.assign(np.zeros(out_channels, np.float32))
    if config.guided:
        # The last convolution starts as gray from the decoder plus a contrast-reduced copy
        # of the guide (the padded guide is the last 3 input channels), so training starts
        # near the guide, as the iterative solvers' `init: guide` does.
        layer = network.get_layer("to_image")
        in_channels = layer.kernel.shape[2]
        kernel = np.zeros((KERNEL, KERNEL, in_channels, 3), np.float32)
        blur = np.outer([0, 1, 2, 1, 0], [0, 1, 2, 1, 0]) / 16.0  # centred, sums to 1
        gray = gray_kernel(rng, in_channels - 3, blur)  # (5, 5, 3, in - 3)
        kernel[:, :, : in_channels - 3, :] = np.transpose(gray, (0, 1, 3, 2))
        centre = KERNEL // 2
        for c in range(3):
            kernel[centre, centre, in_channels - 3 + c, c] = 4.0
        if config.residual:  # the guide is added after; the change starts small and gray
            kernel[:, :, in_channels - 3 :, :] = 0.0
            layer.kernel.assign(0.1 * kernel)
            layer.bias.assign(np.zeros(3, np.float32))
            return
        layer.kernel.assign(kernel)
        layer.bias.assign(np.full(3, -2.0, np.float32))  # sigmoid(4 (g - 1/2)) ~ g


class Generator:
    """A generator network with the configuration it was built for."""

    def __init__(
        self,
        network: keras.Model,
        config: GeneratorConfig,
        mean: np.ndarray | None = None,
        variance: np.ndarray | None = None,
    ) -> None:
        self.network = network
        self.config = config
        #: the embedding statistics standardized inside the network (kept for checkpoints)
        self.mean = np.zeros(config.embedding_size, np.float32) if mean is None else mean
        self.variance = np.ones(config.embedding_size, np.float32) if variance is None else variance
        #: latent only: the prepared parameterization that renders the network's output
        self.renderer: Parameterization | None = None
        # A fixed signature: one trace per generator, whatever the batch size.
        c = config
        signature = [tf.TensorSpec((None, c.embedding_size), tf.float32)]
        if c.guided:
            signature.append(tf.TensorSpec((None, c.input_size, c.input_size, 3), tf.float32))
        self._compiled = tf.function(
            lambda *inputs: self.network(list(inputs), training=False), input_signature=signature
        )

    @classmethod
    def build(
        cls,
        config: GeneratorConfig,
        mean: np.ndarray | None = None,
        variance: np.ndarray | None = None,
        seed: int = 0,
    ) -> Generator:
        return cls(build_network(config, mean, variance, seed), config, mean, variance)

    @property
    def guided(self) -> bool:
        return self.config.guided

    @property
    def latent(self) -> bool:
        return self.config.latent

    def render_with(self, renderer: Parameterization) -> None:
        """Latent only: render the network's output with ``renderer`` (prepared)."""
        self.renderer = renderer
        self._compiled = latent.compiled(self.network, renderer.to_images)

    def __call__(self, embeddings, guides=None, training: bool = False) -> tf.Tensor:
        """Images for a batch, as a tensor (usable inside a compiled step)."""
        inputs = [embeddings, guides] if self.guided else [embeddings]
        out = self.network(inputs, training=training)
        if self.latent:
            if self.renderer is None:
                raise FaceReconError("a latent generator renders only after check_model()")
            return self.renderer.to_images(out)
        return out

    def own_guides(self, model: FaceModel) -> Strangers | None:
        """The guides it makes itself for templates of ``model``, or None."""
        return self.config.own_guides(model)

    def check_model(self, model: FaceModel, where: str = "generator") -> None:
        """Raise unless this generator was made for ``model`` (name and sizes). A latent
        generator then gets its parameterization, prepared for ``model``, to render with."""
        c = self.config
        if (c.model, c.input_size, c.embedding_size) != (
            model.name,
            model.input_size,
            model.embedding_size,
        ):
            raise FaceReconError(
                f"{where}: made for model {c.model!r} ({c.input_size}x{c.input_size} in, "
                f"{c.embedding_size}-d), but the model here is {model.name!r} "
                f"({model.input_size}x{model.input_size} in, {model.embedding_size}-d)"
            )
        if c.latent and self.renderer is None:
            self.render_with(latent.renderer(c.parameterization, model))

    def check_inputs(
        self,
        embeddings: np.ndarray,
        guides: np.ndarray | None,
        where: str = "embedding",
        own: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings as (N, D) and guides as (N, S, S, 3) float32, or an error naming both
        sides. One guide (S, S, 3) is repeated for every embedding. ``own``: check the
        embeddings only (the generator's own guides are made from them afterwards)."""
        c = self.config
        rows = np.atleast_2d(numeric(embeddings, where))
        if rows.ndim != 2 or rows.shape[1] != c.embedding_size:
            raise FaceReconError(
                f"{where}: embedding of shape {tuple(np.shape(embeddings))}; the generator "
                f"takes {c.embedding_size}-d embeddings (model {c.model!r}): shape "
                f"({c.embedding_size},) or (N, {c.embedding_size})"
            )
        check_rows(rows, where)
        if own:
            return rows, None
        if self.guided and guides is None:
            raise FaceReconError(f"{where}: the {c.describe()} needs a guide image")
        if not self.guided and guides is not None:
            raise FaceReconError(f"{where}: the {c.describe()} takes no guide image")
        if guides is None:
            return rows, None
        guides = np.asarray(guides, np.float32)
        if guides.ndim == 3:
            guides = np.repeat(guides[None], len(rows), axis=0)
        if guides.shape != (len(rows), c.input_size, c.input_size, 3):
            raise FaceReconError(
                f"{where}: guides of shape {tuple(guides.shape)} for {len(rows)} embedding(s); "
                f"the generator takes ({c.input_size}, {c.input_size}, 3) per embedding"
            )
        return rows, guides

    def generate(
        self, embeddings: np.ndarray, guides: np.ndarray | None = None, batch: int = 32
    ) -> np.ndarray:
        """Images (N, S, S, 3) in [0, 1] for many embeddings, ``batch`` at a time (a latent
        generator renders at most :data:`RENDER_BATCH` at a time: its frames are large)."""
        rows, guides = self.check_inputs(embeddings, guides)
        if self.latent:
            if self.renderer is None:
                raise FaceReconError("a latent generator renders only after check_model()")
            batch = min(batch, RENDER_BATCH)
        out = []
        for i in range(0, len(rows), batch):
            inputs = [tf.constant(rows[i : i + batch])]
            if guides is not None:
                inputs.append(tf.constant(guides[i : i + batch]))
            out.append(self._compiled(*inputs).numpy())
        return np.concatenate(out)
