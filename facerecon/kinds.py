"""Base classes of the four plugin kinds: what a plugin author subclasses.

Every class carries a ``name`` (what a spec calls it) and a pydantic ``Params`` model with
``extra="forbid"``, so a spec's parameters are checked before anything runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from facerecon.context import PrepareContext, StepInfo
    from facerecon.objective import Objective


class Params(BaseModel):
    """Base of every plugin's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Plugin(ABC):
    """Common shape of every plugin class."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params

    def __init__(self, params: Params | None = None) -> None:
        self.params = params if params is not None else self.Params()


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


class Solver(Plugin):
    """Minimizes an :class:`~facerecon.objective.Objective` over a batch of images."""

    @abstractmethod
    def solve(
        self,
        objective: Objective,
        init: np.ndarray,
        on_step: Callable[[StepInfo], None],
    ) -> SolveResult: ...
