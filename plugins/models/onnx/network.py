"""An ONNX face recognizer as a functional Keras model: RGB [0, 1] NHWC in, its embedding
out, with every tap tensor a named layer (one forward pass for all of them)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from facerecon.graphs.graph import GraphLayer
from facerecon.graphs.onnx import OnnxGraph


def layer_name(tensor: str) -> str:
    """A Keras layer name for an ONNX tensor name (Keras allows no '/' and the like)."""
    return "t_" + re.sub(r"[^0-9A-Za-z_]", "_", tensor)


class Preprocess(keras.layers.Layer):
    """RGB [0, 1] NHWC to the graph's input: 0..255, channel order, (x - mean) / std, NCHW."""

    def __init__(self, bgr: bool, mean: Sequence[float], std: Sequence[float], **kwargs) -> None:
        super().__init__(trainable=False, **kwargs)
        self.bgr = bgr
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def call(self, images: tf.Tensor) -> tf.Tensor:
        x = images[..., ::-1] if self.bgr else images
        x = (x * 255.0 - self.mean) / self.std
        return tf.transpose(x, [0, 3, 1, 2])


class GraphOutputs(keras.layers.Layer):
    """The graph from its input node to several nodes at once, as a list; ``per_image``:
    run image by image, for a graph made for a batch of one."""

    def __init__(
        self, graph: OnnxGraph, feed: str, outputs: Sequence[str], per_image: bool, **kwargs
    ) -> None:
        super().__init__(trainable=False, **kwargs)
        self.graph, self.feed, self.outputs_ = graph, feed, list(outputs)
        self.per_image = per_image
        for node in self.outputs_:
            graph.check_stretch(feed, node)

    def call(self, inputs: tf.Tensor) -> list[tf.Tensor]:
        if not self.per_image:
            return self.graph.run({self.feed: inputs}, self.outputs_)

        def one(image: tf.Tensor) -> list[tf.Tensor]:
            return [v[0] for v in self.graph.run({self.feed: image[None]}, self.outputs_)]

        return tf.map_fn(one, inputs, fn_output_signature=[inputs.dtype] * len(self.outputs_))


class Last(keras.layers.Layer):
    """Its last input: the tap layers before it become part of the model (readable by
    name) without adding any work."""

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        return inputs[-1]


def build(
    graph: OnnxGraph,
    input_size: int,
    output: str,
    taps: Sequence[str],
    bgr: bool,
    mean: Sequence[float],
    std: Sequence[float],
    name: str,
    per_image: bool = False,
) -> keras.Model:
    """The functional model: (N, S, S, 3) RGB [0, 1] to the ``output`` tensor (flattened to
    (N, D)); each of ``taps`` a layer named by :func:`layer_name`. ``per_image``: the graph
    is made for a batch of one (its reshapes may write the 1 out) and sees one image at a
    time."""
    (feed,) = graph.parameters
    image = keras.Input((input_size, input_size, 3), name="image", dtype="float32")
    x = Preprocess(bgr, mean, std, name="preprocess")(image)
    if not taps and not per_image:
        out = GraphLayer(graph, feed, graph.tensor(output), name="graph")(x)
        outputs = [out]
    else:
        nodes = [graph.tensor(t) for t in (*taps, output)]
        values = GraphOutputs(graph, feed, nodes, per_image, name="graph")(x)
        named = [
            keras.layers.Identity(name=layer_name(tensor))(value)
            for tensor, value in zip(taps, values[:-1], strict=True)
        ]
        outputs = [Last(name="output")([*named, values[-1]])]
    embedding = keras.layers.Flatten(name="embedding")(outputs[-1])
    model = keras.Model(image, embedding, name=name)
    model.trainable = False
    return model
