"""The model's one forward pass: the embedding and every tapped layer of a batch, inside a
compiled step or in chunks over numpy arrays; tap names checked before anything is built."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from facerecon.core.errors import FaceReconError, did_you_mean
from facerecon.core.kinds import FaceModel

PIXELS = "pixels"


def check_taps(model: FaceModel, taps: Sequence[str], where: str) -> None:
    """One line for a layer name ``model`` cannot tap (before a run builds anything)."""
    valid = [PIXELS, *model.tap_layers()]
    for name in taps:
        if name not in valid:
            hint = did_you_mean(name, valid)
            raise FaceReconError(
                f"{where}: {model.name} has no layer {name!r} to tap "
                f"(tappable: {', '.join(valid)}){hint}"
            )


def build_forward(model: FaceModel, taps: Sequence[str]) -> keras.Model:
    """A Keras model returning [embedding, *taps] in one pass (``pixels`` excluded)."""
    net = model.network()
    layers = [t for t in taps if t != PIXELS]
    if not layers:
        return net
    return keras.Model(net.input, [net.output, *(net.get_layer(t).output for t in layers)])


class Forward:
    """Runs a face model with taps, as tensors inside a step or batched as numpy."""

    def __init__(self, model: FaceModel, taps: Sequence[str]) -> None:
        self.taps = list(dict.fromkeys(taps))
        self.layers = [t for t in self.taps if t != PIXELS]
        self.keras_model = build_forward(model, self.taps)
        self._compiled = tf.function(self.__call__, reduce_retracing=True)

    def __call__(self, images: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        out = self.keras_model(images, training=False)
        if not self.layers:
            return out, ({PIXELS: images} if PIXELS in self.taps else {})
        tapped = dict(zip(self.layers, out[1:], strict=True))
        if PIXELS in self.taps:
            tapped[PIXELS] = images
        return out[0], tapped

    def numpy(
        self, images: np.ndarray, batch: int = 16
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Embeddings and taps of many images, in chunks."""
        embs, taps = [], {t: [] for t in self.taps}
        for i in range(0, len(images), batch):
            e, t = self._compiled(tf.constant(images[i : i + batch], tf.float32))
            embs.append(e.numpy())
            for name, value in t.items():
                taps[name].append(value.numpy())
        return np.concatenate(embs), {k: np.concatenate(v) for k, v in taps.items()}


def forward_for(model: FaceModel, taps: Sequence[str] = ()) -> Forward:
    """The model's :class:`Forward` for these taps, built once per model instance."""
    cache = model.__dict__.setdefault("_forwards", {})
    key = tuple(dict.fromkeys(taps))
    if key not in cache:
        cache[key] = Forward(model, key)
    return cache[key]
