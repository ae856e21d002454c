"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in Keras 3.

:func:`convert` checks the records a :class:`~.reader.DlibNet` holds against the network
definition (the file does not store the graph) and turns them into named float32 arrays,
each affine layer folded into the convolution before it; :func:`build` makes the
functional model from those arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from facerecon.core.errors import FaceReconError

from .reader import AddPrev, Affine, Conv, DlibNet, FullyConnected, Layer, Pool, Relu

if TYPE_CHECKING:
    import keras

_L = TypeVar("_L", bound=Layer)

INPUT_SIZE = 150
EMBEDDING_SIZE = 128
STEM_CHANNELS = 32
# (channels, blocks, whether the first block halves the map), from the input upwards.
STAGES: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)


@dataclass(frozen=True)
class _Block:
    name: str  # stageS_blockB
    stage: int
    channels: int
    stride: int
    last_of_stage: bool


def _blocks() -> Iterator[_Block]:
    for stage, (channels, count, down) in enumerate(STAGES, start=1):
        for block in range(1, count + 1):
            stride = 2 if down and block == 1 else 1
            yield _Block(f"stage{stage}_block{block}", stage, channels, stride, block == count)


def tap_layer_names() -> list[str]:
    """Every tappable layer, from the input side upwards (see ``DlibResnet``)."""
    names = ["conv1", "pool1"]
    for block in _blocks():
        names.append(block.name)
        if block.last_of_stage:
            names.append(f"stage{block.stage}")
    names.append("pool_global")
    return names


def expected_wrappers() -> tuple[int, ...]:
    """Wrapper versions, outside-in, of the network definition (1 = tag/skip, 2 = layer)."""
    tag, layer = 1, 2
    bottom_up = [layer] * 4  # conv, affine, relu, max pool
    for block in _blocks():
        bottom_up += [tag] + [layer] * 5  # tag1, conv, affine, relu, conv, affine
        if block.stride == 2:
            bottom_up += [tag, tag, layer]  # tag2, skip1, avg pool
        bottom_up += [layer, layer]  # add_prev, relu
    bottom_up += [layer, layer]  # global average pool, fc
    return tuple(reversed(bottom_up))


class _Records:
    """Walks the layer records, failing with a clear line on the first mismatch."""

    def __init__(self, layers: tuple[Layer, ...], source: str) -> None:
        self.layers = layers
        self.index = 0  # the record to read next
        self.current = 0  # the record the next failure is about
        self.source = source

    def fail(self, message: str) -> FaceReconError:
        return FaceReconError(
            f"{self.source} is not dlib's face-recognition ResNet: layer record "
            f"{self.current} {message}"
        )

    def next(self, kind: type[_L], what: str) -> _L:
        self.current = self.index
        if self.index >= len(self.layers):
            raise self.fail(f"is missing, expected {what}")
        layer = self.layers[self.index]
        if not isinstance(layer, kind) or getattr(layer, "disabled", False):
            raise self.fail(f"is {type(layer).__name__}, expected enabled {what}")
        self.index += 1
        return layer

    def conv_affine(
        self, what: str, channels_in: int, channels: int, kernel: int, stride: int, padding: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """A conv and the affine after it, folded into a Keras kernel and bias."""
        conv = self.next(Conv, f"{what} convolution")
        wanted = (channels, channels_in, kernel, kernel)
        if conv.filters.shape != wanted or conv.use_relu:
            raise self.fail(f"has filters {conv.filters.shape}, expected {wanted} ({what})")
        if conv.stride != (stride, stride) or conv.padding != (padding, padding):
            raise self.fail(
                f"has stride {conv.stride} and padding {conv.padding}, expected "
                f"{(stride, stride)} and {(padding, padding)} ({what})"
            )
        affine = self.next(Affine, f"{what} affine")
        if affine.gamma.shape != (channels,):
            raise self.fail(f"has {affine.gamma.size} channels, expected {channels} ({what})")
        gamma = affine.gamma.astype(np.float64)
        bias = np.zeros(channels) if conv.biases is None else conv.biases.astype(np.float64)
        kernel_hwio = conv.filters.astype(np.float64).transpose(2, 3, 1, 0) * gamma
        return kernel_hwio.astype(np.float32), (bias * gamma + affine.beta).astype(np.float32)

    def relu(self, what: str) -> None:
        self.next(Relu, f"{what} relu")

    def pool(self, kind: str, size: int, stride: int, what: str) -> None:
        pool = self.next(Pool, f"{what} {kind} pool")
        wanted = (kind, (size, size), (stride, stride), (0, 0))
        if (pool.kind, pool.size, pool.stride, pool.padding) != wanted:
            raise self.fail(f"is {pool}, expected {kind} pool {size}x{size}/{stride} ({what})")

    def end(self) -> None:
        self.current = self.index
        if self.index != len(self.layers):
            raise self.fail(f"is one of {len(self.layers) - self.index} unexpected extra layers")


def convert(net: DlibNet, source: str) -> dict[str, np.ndarray]:
    """Check ``net`` against the architecture and return Keras-ready arrays by name.

    Keys are ``<layer>/kernel`` and ``<layer>/bias`` for every convolution, plus
    ``embedding/kernel`` and ``normalize/mean`` (the RGB means on the 0..255 scale).
    """
    if (net.input.rows, net.input.cols) != (INPUT_SIZE, INPUT_SIZE):
        raise FaceReconError(
            f"{source}: input is {net.input.rows}x{net.input.cols}, expected "
            f"{INPUT_SIZE}x{INPUT_SIZE} for dlib's face-recognition ResNet"
        )
    if net.wrappers[:-1] != expected_wrappers()[:-1]:
        raise FaceReconError(
            f"{source} is not dlib's face-recognition ResNet: its tag/layer nesting differs"
        )
    records = _Records(net.layers, source)
    weights = {"normalize/mean": np.asarray(net.input.mean, dtype=np.float32)}

    def conv(name: str, *args: int) -> None:
        weights[f"{name}/kernel"], weights[f"{name}/bias"] = records.conv_affine(name, *args)

    conv("conv1", 3, STEM_CHANNELS, 7, 2, 0)
    records.relu("conv1")
    records.pool("max", 3, 2, "pool1")
    channels = STEM_CHANNELS
    for block in _blocks():
        # dlib pads 3x3 convs by 1 at stride 1 and not at all at stride 2.
        padding = 1 if block.stride == 1 else 0
        conv(f"{block.name}_conv1", channels, block.channels, 3, block.stride, padding)
        records.relu(f"{block.name}_conv1")
        conv(f"{block.name}_conv2", block.channels, block.channels, 3, 1, 1)
        if block.stride == 2:
            records.pool("avg", 2, 2, f"{block.name}_shortcut")
        records.next(AddPrev, f"{block.name} add")
        records.relu(block.name)
        channels = block.channels
    records.pool("avg", 0, 1, "pool_global")
    fc = records.next(FullyConnected, "embedding fc")
    if fc.weights.shape != (channels, EMBEDDING_SIZE) or fc.biases is not None:
        raise records.fail(
            f"has weights {fc.weights.shape}, expected ({channels}, {EMBEDDING_SIZE}) without bias"
        )
    weights["embedding/kernel"] = np.ascontiguousarray(fc.weights, dtype=np.float32)
    records.end()
    return weights


@functools.cache
def zero_pad_add_layer() -> type[keras.layers.Layer]:
    """The Keras layer class for dlib's ``add_prev`` (made on first use: keras loads lazily)."""
    import keras

    @keras.saving.register_keras_serializable(package="facerecon_dlib_resnet")
    class ZeroPadAdd(keras.layers.Layer):
        """dlib's ``add_prev``: both maps zero-padded to the larger shape, then summed.

        The padding goes at the bottom, right and channel end (index 0 stays aligned); this
        is how a residual_down block adds its pooled shortcut when sizes or channels differ.
        """

        def compute_output_shape(self, input_shapes: list[tuple]) -> tuple:
            a, b = input_shapes
            return (a[0], *(max(x, y) for x, y in zip(a[1:], b[1:], strict=True)))

        def call(self, inputs: list) -> keras.KerasTensor:
            a, b = inputs
            target = self.compute_output_shape([tuple(a.shape), tuple(b.shape)])
            return _pad_to(a, target) + _pad_to(b, target)

    def _pad_to(x: keras.KerasTensor, target: tuple) -> keras.KerasTensor:
        extra = [t - s for t, s in zip(target[1:], x.shape[1:], strict=True)]
        if not any(extra):
            return x
        return keras.ops.pad(x, [[0, 0]] + [[0, e] for e in extra])

    return ZeroPadAdd


def build(weights: Mapping[str, np.ndarray]) -> keras.Model:
    """The functional model: float RGB in [0, 1], NHWC 150x150, to the raw 128-d fc output."""
    import keras

    zero_pad_add = zero_pad_add_layer()
    layers = keras.layers
    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image", dtype="float32")
    x = layers.Rescaling(255.0, name="to_pixels")(image)
    # dlib divides by 256, not 255; sqrt(variance) = 256 exactly.
    mean = np.asarray(weights["normalize/mean"], dtype=np.float32)
    x = layers.Normalization(mean=mean, variance=np.full(3, 256.0**2), name="normalize")(x)

    def conv(x: keras.KerasTensor, name: str, stride: int, padding: str, relu: bool):
        kernel, bias = weights[f"{name}/kernel"], weights[f"{name}/bias"]
        layer = layers.Conv2D(
            kernel.shape[-1],
            kernel.shape[:2],
            strides=stride,
            padding=padding,
            activation="relu" if relu else None,
            name=name,
        )
        out = layer(x)
        layer.set_weights([kernel, bias])
        return out

    x = conv(x, "conv1", 2, "valid", relu=True)
    x = layers.MaxPooling2D(3, 2, padding="valid", name="pool1")(x)
    for block in _blocks():
        padding = "same" if block.stride == 1 else "valid"
        y = conv(x, f"{block.name}_conv1", block.stride, padding, relu=True)
        y = conv(y, f"{block.name}_conv2", 1, "same", relu=False)
        if block.stride == 2:
            x = layers.AveragePooling2D(2, 2, padding="valid", name=f"{block.name}_shortcut")(x)
        x = zero_pad_add(name=f"{block.name}_add")([y, x])
        x = layers.ReLU(name=block.name)(x)
        if block.last_of_stage:
            x = layers.Identity(name=f"stage{block.stage}")(x)
    x = layers.GlobalAveragePooling2D(name="pool_global")(x)
    fc = layers.Dense(EMBEDDING_SIZE, use_bias=False, name="embedding")
    out = fc(x)
    fc.set_weights([weights["embedding/kernel"]])
    model = keras.Model(image, out, name="dlib_resnet")
    model.trainable = False  # a fixed feature extractor: only the images are optimized
    return model
