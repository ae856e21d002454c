"""The HSE face-description MobileNet (``faceres``) as a functional Keras model."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facerecon.graphs.tfjs import chain, load_graph_model

from .graph import INPUT_NODE, INPUT_SIZE, OUTPUT_LAYER, OUTPUT_NODE, TAP_NODES

# VGGFace2's mean pixel (R, G, B): the network was trained on BGR 0..255 minus it (checked on
# photos: 3 of one person against 4 others, it separates them best of the inputs tried).
VGGFACE2_MEAN_RGB = (131.0912, 103.8827, 91.4953)


class VggFace2Input(keras.layers.Layer):
    """RGB in [0, 1] to BGR 0..255 minus the VGGFace2 mean, the network's own input."""

    def call(self, images: tf.Tensor) -> tf.Tensor:
        mean_bgr = np.asarray(VGGFACE2_MEAN_RGB[::-1], dtype=np.float32)
        return images[..., ::-1] * 255.0 - mean_bgr


def build(model_json: Path) -> keras.Model:
    """The functional model: RGB [0, 1] (N, 224, 224, 3) to the 1024-d pooled features."""
    graph = load_graph_model(model_json, [OUTPUT_NODE])
    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image", dtype="float32")
    x = VggFace2Input(name="preprocess")(image)
    out = chain(graph, x, INPUT_NODE, (*TAP_NODES, (OUTPUT_LAYER, OUTPUT_NODE)))
    model = keras.Model(image, out, name="faceres")
    model.trainable = False
    return model
