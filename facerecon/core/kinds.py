"""Base classes of the plugin kinds, and the plain data they exchange with the host.

This is the bottom layer of facerecon: it imports nothing else of the package. Every class
carries a ``name`` (what a spec calls it) and a pydantic ``Params`` model with
``extra="forbid"``, so a spec's parameters are checked before anything runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


class Params(BaseModel):
    """Base of every plugin's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Plugin(ABC):
    """Common shape of every plugin class."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    #: the terms of use of weights the plugin fetches, when they are not facerecon's licence
    terms: ClassVar[str | None] = None

    def __init__(self, params: Params | None = None) -> None:
        self.params = params if params is not None else self.Params()


@dataclass
class PrepareContext:
    """What a regularizer may use once, before the first step."""

    model: FaceModel
    #: images (N, H, W, 3) in [0, 1] -> (embeddings, {tap: activations}); batched internally
    forward: Callable[[np.ndarray, Sequence[str]], tuple[np.ndarray, dict[str, np.ndarray]]]
    #: the guide of every batch element (B, H, W, 3), or None when the spec has no guides
    guides: np.ndarray | None
    #: reads a collection of face images (``builtin:lfw``, a folder, a photo) as model chips
    load_images: Callable[[str, bool], np.ndarray]
    seed: int = 0


@dataclass
class StepInfo:
    """One solver step, as lifecycle hooks see it."""

    step: int
    #: per batch element: "total", "embedding", each regularizer label, "distance", "cosine"
    terms: dict[str, np.ndarray]
    #: the weight in force for each regularizer label
    weights: dict[str, float]
    #: the batch of images the terms were computed on (a tensor or array); read when needed
    images: Any
    #: further scalar metrics a solver reports, logged as they are (e.g. ``train/loss/total``)
    metrics: dict[str, float] = field(default_factory=dict)

    def images_numpy(self) -> np.ndarray:
        images = self.images
        return images.numpy() if hasattr(images, "numpy") else np.asarray(images)


@dataclass(frozen=True)
class FaceChip:
    """One face cut out of a photo the way a model expects it."""

    image: np.ndarray  # float32 RGB in [0, 1], (size, size, 3)
    box: tuple[int, int, int, int]  # left, top, right, bottom in the photo


class FaceModel(Plugin):
    """A differentiable face-embedding network.

    ``network()`` maps float RGB images in [0, 1], NHWC, of ``input_size`` to the
    pre-normalization embedding; its preprocessing is inside the graph so gradients reach
    the pixels. Any layer named in ``tap_layers()`` can be read in the same forward pass.
    """

    input_size: int
    embedding_size: int
    #: cosine thresholds between two photos' embeddings at false-match rates ("1e-2",
    #: "1e-3"), calibrated on labelled photos; a model with thresholds can judge others
    thresholds: ClassVar[dict[str, float]] = {}
    #: whether the model judges every run that names no judges (when calibrated and not the
    #: attacked model); off by default, so that calibrating a model adds it to no run
    default_judge: ClassVar[bool] = False

    @classmethod
    def available(cls) -> str | None:
        """None when the model can be built here, else one line saying what is missing
        (e.g. weights not fetched and no way to fetch them). Must not fetch anything."""
        return None

    @abstractmethod
    def network(self) -> keras.Model:
        """The functional Keras model (built once, then cached by the plugin)."""
        ...

    @abstractmethod
    def tap_layers(self) -> Sequence[str]:
        """Names of layers a regularizer may tap, from the input side upwards."""
        ...

    @abstractmethod
    def align(self, photo: np.ndarray) -> list[FaceChip]:
        """Every face found in an RGB [0, 1] photo, largest first, as model-ready chips."""
        ...

    def align_chip(self, chip: np.ndarray) -> np.ndarray:
        """This model's chip of an image that already is a face chip of another model (a
        reconstruction, used when this model judges it). The default finds the face again
        with :meth:`align` and falls back to resizing the whole chip."""
        from skimage.transform import resize

        found = self.align(chip)
        if found:
            return found[0].image.astype(np.float32)
        size = (self.input_size, self.input_size)
        return resize(chip, size, anti_aliasing=True, preserve_range=True).astype(np.float32)


class Metric(Plugin):
    """An embedding-space loss: ``(embeddings, targets) -> one value per batch element``."""

    @abstractmethod
    def __call__(self, embeddings: tf.Tensor, targets: tf.Tensor) -> tf.Tensor: ...


class Regularizer(Plugin):
    """An image prior: ``(images, taps) -> one value per batch element``.

    ``taps()`` names the model layers the regularizer reads (``"pixels"`` is the image
    itself); the host runs one forward pass and hands them over as ``taps[name]``.
    ``prepare`` runs once before the first step (guide activations, statistics, ...).
    """

    def taps(self) -> Sequence[str]:
        return ()

    def prepare(self, context: PrepareContext) -> None:
        """Compute whatever is fixed for the run; the default needs nothing."""

    @abstractmethod
    def __call__(self, images: tf.Tensor, taps: dict[str, tf.Tensor]) -> tf.Tensor: ...


@dataclass
class SolveResult:
    """What a solver hands back: the final batch and why it stopped."""

    images: np.ndarray
    steps: int
    stop_reason: str
    #: anything else worth keeping (the feedforward solver returns its ``generator``)
    extras: dict[str, Any] = field(default_factory=dict)
    #: the parameterization's whole pictures (a generator's frames), when it has them
    frames: np.ndarray | None = None


class Transform(Plugin):
    """A random, differentiable map of an image batch (applied before the model).

    Each call draws fresh parameters for every image from ``seed`` (a stateless-RNG seed,
    an int32 tensor of shape (2,)): the same seed gives the same draw, so runs repeat.
    """

    @abstractmethod
    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """(N, H, W, 3) images in [0, 1] -> transformed images of the same shape."""


class Parameterization(Plugin):
    """What an iterative solver optimizes: parameters that map to images in [0, 1]."""

    #: whether the parameters are the pixels themselves (pixel-space gradient tricks apply)
    pixel_space: ClassVar[bool] = False
    #: memory one batch element takes here beyond the model's (a generator's frames and
    #: their gradients), in bytes: validation refuses a batch that cannot fit
    bytes_per_image: ClassVar[int] = 0

    @abstractmethod
    def from_images(self, images: np.ndarray) -> np.ndarray:
        """Parameters whose images are ``images`` (B, H, W, 3) in [0, 1] (for init kinds)."""

    @abstractmethod
    def to_images(self, params: tf.Tensor) -> tf.Tensor:
        """The (B, H, W, 3) images in [0, 1] that ``params`` stand for; differentiable."""

    def constrain(self, params: tf.Variable) -> None:
        """Keep the parameters valid after an update; the default leaves them alone."""
        return None

    def prepare(self, context: PrepareContext) -> None:
        """Set up for a run's model (once, before :meth:`from_images`); the default does
        nothing. A generator measures where the model's chip lies in its frames here."""
        return None

    def penalty(self, params: tf.Tensor) -> tf.Tensor | None:
        """A prior on the parameters, per batch element (B,), added to the loss as the term
        ``prior``; None (the default) adds nothing."""
        return None

    def frames(self, params: tf.Tensor) -> tf.Tensor | None:
        """Whole pictures the parameters make, when they are more than the model's chips
        (a generator's full frame), kept with the run's final images; None by default."""
        return None

    def sample(self, count: int, seed: int) -> np.ndarray | None:
        """Parameters of ``count`` random images drawn from the parameterization's own
        distribution (a generator's seeded samples), the same for the same seed, after
        :meth:`prepare`; None (the default) when it has none. One-pass networks that output
        parameters train on them."""
        return None


@dataclass(frozen=True)
class Detection:
    """One face a detector found."""

    box: tuple[int, int, int, int]  # left, top, right, bottom
    score: float  # the detector's confidence in [0, 1]


class Detector(Plugin):
    """A face detector (not a recognizer): judges whether an image shows a face at all."""

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Every face in an RGB [0, 1] image, most confident first."""


class Objective(Protocol):
    """What a solver minimizes (implemented by :class:`facerecon.engine.objective.Objective`)."""

    labels: list[str]
    parameterization: Parameterization

    def weights_at(self, step: int) -> np.ndarray: ...

    def step_seed(self, step: int) -> np.ndarray: ...

    def __call__(
        self,
        images: tf.Tensor,
        weights: tf.Tensor,
        targets: tf.Tensor | None = None,
        seed: tf.Tensor | None = None,
    ) -> dict[str, tf.Tensor]: ...


class OwnGuides(Protocol):
    """Guides a generator makes for each template itself (e.g. its nearest strangers)."""

    def preload(self) -> None:
        """Read what the guides are made of, so that making them is not timed as set-up."""

    def means(self, embeddings: np.ndarray) -> np.ndarray:
        """One guide image per (N, D) template row."""


class Generator(Protocol):
    """A trained one-pass reconstructor, as the host uses it (the attack's ``--generator``)."""

    #: whether it takes a guide image besides the template
    guided: bool

    def check_model(self, model: FaceModel, source: str) -> None:
        """One line if ``model`` is not the model it was trained against."""

    def own_guides(self, model: FaceModel) -> OwnGuides | None:
        """The guides it makes itself for templates of ``model``, or None."""

    def generate(self, embeddings: np.ndarray, guides: np.ndarray | None, batch: int) -> Any:
        """(N, S, S, 3) images in [0, 1] of (N, D) templates, ``batch`` at a time."""


class Solver(Plugin):
    """Minimizes an :class:`Objective` over a batch of images.

    A solver whose ``trains_generators`` is true trains a one-pass generator rather than
    reconstructing its targets; it then also loads, applies and evaluates such generators
    for the host (``facerecon generate``, ``evaluate -g``, the attack's ``--generator``).
    """

    #: whether :meth:`solve` trains a generator (the classmethods below are then real)
    trains_generators: ClassVar[bool] = False

    @classmethod
    def load_generator(cls, source: str) -> Generator:
        """The generator stored at ``source`` (an MLflow model URI or a folder)."""
        raise NotImplementedError(f"{cls.name} trains no generators")

    @classmethod
    def generate(cls, generator: str, embedding: Any = None, **options: Any) -> Any:
        """Images of templates (an .npy, an array) or of a photo's face, in one pass."""
        raise NotImplementedError(f"{cls.name} trains no generators")

    @classmethod
    def evaluate(cls, spec: Any, generators: list[str], **options: Any) -> Any:
        """Generators scored against the spec's iterative solver on the spec's targets."""
        raise NotImplementedError(f"{cls.name} trains no generators")

    @abstractmethod
    def solve(
        self,
        objective: Objective,
        init: np.ndarray,
        on_step: Callable[[StepInfo], None],
    ) -> SolveResult: ...
