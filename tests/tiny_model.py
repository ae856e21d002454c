"""A tiny, seeded face-model stand-in so the core's tests run in seconds.

Registered in code by the tests (never through an entry point): no user-facing path can
reach it.
"""

from __future__ import annotations

import keras
import numpy as np

from facerecon import FaceChip, FaceModel, hookimpl
from facerecon.faces.photos import resize


class TinyModel(FaceModel):
    """32x32 input, two strided convs, a 16-d embedding."""

    name = "tiny"
    input_size = 32
    embedding_size = 16

    def network(self) -> keras.Model:
        if not hasattr(self, "_net"):
            keras.utils.set_random_seed(0)
            x = inputs = keras.Input((32, 32, 3))
            x = keras.layers.Rescaling(2.0, -1.0, name="scale")(x)
            x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1")(x)
            x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
            x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
            x = keras.layers.Dense(16, name="embedding")(x)
            self._net = keras.Model(inputs, x, name="tiny")
        return self._net

    def tap_layers(self) -> list[str]:
        return ["conv1", "conv2", "pool"]

    def align(self, photo: np.ndarray) -> list[FaceChip]:
        h, w = photo.shape[:2]
        return [FaceChip(resize(photo, 32), (0, 0, w, h))]


@hookimpl
def register_models(register):
    register(TinyModel)
