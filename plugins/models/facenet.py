"""FaceNet (Inception-ResNet-v1, Sandberg's 2018 models) with keras-facenet's converted weights.

keras-facenet's own builder runs under Keras 3, but its model starts at its own ``Input`` and
ends in an l2-normalize ``Lambda``; we need the preprocessing inside the graph, every tap
reachable from the top-level input and the pre-normalization output. So the architecture is
rebuilt here with the same layer names, and the Keras 2 weight files are read by layer name
with h5py, strictly: every weighted layer must be in the file with matching shapes, so a wrong
file can never leave some layers random.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from facerecon import FaceChip, FaceModel, FaceReconError, hookimpl
from facerecon.core.kinds import Params as BaseParams
from facerecon.faces.photos import as_rgb
from facerecon_plugins.detectors import mtcnn

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

WEIGHTS_ENV = "FACERECON_FACENET_WEIGHTS"
DOWNLOAD_TIMEOUT = 10.0  # seconds per socket operation: offline machines fail fast, no hang
MARGIN = 16  # keras-facenet's crop margin: int(0.1 * 160) photo pixels on every side
MIN_CONFIDENCE = 0.95  # keras-facenet's detection threshold
# keras-facenet's embeddings() standardizes with (v - 127.5) / 127.5; we match it so our
# embeddings equal keras-facenet's (Sandberg's training code divided by 128, 0.4% apart).
STD_OFFSET, STD_SCALE = 127.5, 127.5

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


def build_network(embedding_size: int = 512) -> keras.Model:
    """Inception-ResNet-v1 with random weights: [0, 1] RGB in, pre-normalization embedding out.

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
                momentum=0.995, epsilon=0.001, scale=False, name=f"{name}_BatchNorm"
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

    def pool(x, name):
        return layers.MaxPooling2D(3, strides=2, padding="valid", name=name)(x)

    inputs = keras.Input((160, 160, 3), name="facenet_input")
    standardize = layers.Rescaling(255 / STD_SCALE, -STD_OFFSET / STD_SCALE, name="Standardize")
    x = standardize(inputs)
    x = conv_bn(x, 32, 3, "Conv2d_1a_3x3", strides=2, padding="valid")
    x = conv_bn(x, 32, 3, "Conv2d_2a_3x3", padding="valid")
    x = conv_bn(x, 64, 3, "Conv2d_2b_3x3")
    x = pool(x, "MaxPool_3a_3x3")
    x = conv_bn(x, 80, 1, "Conv2d_3b_1x1", padding="valid")
    x = conv_bn(x, 192, 3, "Conv2d_4a_3x3", padding="valid")
    x = conv_bn(x, 256, 3, "Conv2d_4b_3x3", strides=2, padding="valid")
    for i in range(1, 6):
        x = block(x, "Block35", i, 0.17)

    b0 = conv_bn(x, 384, 3, "Mixed_6a_Branch_0_Conv2d_1a_3x3", strides=2, padding="valid")
    b1 = conv_bn(x, 192, 1, "Mixed_6a_Branch_1_Conv2d_0a_1x1")
    b1 = conv_bn(b1, 192, 3, "Mixed_6a_Branch_1_Conv2d_0b_3x3")
    b1 = conv_bn(b1, 256, 3, "Mixed_6a_Branch_1_Conv2d_1a_3x3", strides=2, padding="valid")
    x = layers.Concatenate(name="Mixed_6a")([b0, b1, pool(x, "Mixed_6a_Branch_2_MaxPool_1a_3x3")])
    for i in range(1, 11):
        x = block(x, "Block17", i, 0.1)

    branches = []
    for i, widths in enumerate([(256, 384), (256, 256), (256, 256, 256)]):
        b = conv_bn(x, widths[0], 1, f"Mixed_7a_Branch_{i}_Conv2d_0a_1x1")
        if len(widths) == 3:
            b = conv_bn(b, widths[1], 3, f"Mixed_7a_Branch_{i}_Conv2d_0b_3x3")
        name = f"Mixed_7a_Branch_{i}_Conv2d_1a_3x3"
        branches.append(conv_bn(b, widths[-1], 3, name, strides=2, padding="valid"))
    branches.append(pool(x, "Mixed_7a_Branch_3_MaxPool_1a_3x3"))
    x = layers.Concatenate(name="Mixed_7a")(branches)
    for i in range(1, 6):
        x = block(x, "Block8", i, 0.2)
    x = block(x, "Block8", 6, 1.0, activation=None)

    x = layers.GlobalAveragePooling2D(name="AvgPool")(x)
    x = layers.Dense(embedding_size, use_bias=False, name="Bottleneck")(x)
    x = layers.BatchNormalization(
        momentum=0.995, epsilon=0.001, scale=False, name="Bottleneck_BatchNorm"
    )(x)
    model = keras.Model(inputs, x, name="facenet_inception_resnet_v1")
    model.trainable = False
    return model


def load_h5_weights(model: keras.Model, path: str) -> None:
    """Set every weighted layer of ``model`` from a Keras 2 h5 file, matched by layer name.

    Reads both weights-only files (``*-weights.h5``) and full-model files (``model_weights``).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            root = f.get("model_weights", f)
            for layer in model.layers:
                if not layer.weights:
                    continue
                if layer.name not in root:
                    raise ValueError(f"layer {layer.name} is missing")
                group = root[layer.name]
                stored = {
                    n.decode() if isinstance(n, bytes) else n: group[n]
                    for n in group.attrs["weight_names"]
                }
                # Keras 2 names are "<layer>/kernel:0"; Keras 3 variables are just "kernel".
                stored = {n.split("/")[-1].split(":")[0]: v[()] for n, v in stored.items()}
                values = []
                for var in layer.weights:
                    value = stored.get(var.name)
                    if value is None or value.shape != tuple(var.shape):
                        raise ValueError(f"layer {layer.name} has no {var.name} of {var.shape}")
                    values.append(value)
                layer.set_weights(values)
    except (OSError, KeyError, ValueError) as err:
        raise FaceReconError(f"FaceNet weights file {path} does not fit the model: {err}") from None


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # urllib.request.urlretrieve (used by keras-facenet) takes no timeout of its own.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def weights_path(key: str, local: str | None = None) -> str:
    """The weights file for ``key``: ``local``, else $FACERECON_FACENET_WEIGHTS, else
    keras-facenet's verified cache (``~/.keras-facenet``), downloading into it when possible.

    A local file is used as given (the user vouches for it); only a mismatch with the published
    sha256 is logged, since fine-tuned weights are legitimate.
    """
    from keras_facenet.metadata import MODEL_METADATA
    from keras_facenet.utils import download_and_verify, sha256sum

    meta = MODEL_METADATA[key]
    sha, url = meta["keras_weights_sha256"], meta["keras_weights_url"]
    filename = meta["keras_weights_filename"]
    remedy = (
        f"download {filename} from {url} (sha256 {sha}) and pass it as model param "
        f"`weights: <path>` or set {WEIGHTS_ENV}=<path>."
    )
    source = "model param weights" if local else WEIGHTS_ENV
    local = local or os.environ.get(WEIGHTS_ENV)
    if local:
        if not os.path.isfile(local):
            raise FaceReconError(f"FaceNet weights file {local} ({source}) not found: {remedy}")
        if sha256sum(local) != sha:
            log.warning(
                "%s is not the published %s (sha256 %s); using it as given.", local, filename, sha
            )
        return local

    cached = os.path.join(os.path.expanduser("~/.keras-facenet"), meta["dir_name"], filename)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT):
            download_and_verify(url=url, filepath=cached, sha256=sha)
        # download_and_verify checks with `assert`, which `python -O` strips.
        if sha256sum(cached) != sha:
            raise AssertionError
    except (OSError, AssertionError) as err:
        reason = str(err) or type(err).__name__
        if isinstance(err, AssertionError):
            reason = "sha256 mismatch"
        raise FaceReconError(f"No FaceNet weights {key} in {cached} ({reason}): {remedy}") from None
    return cached


class FaceNet(FaceModel):
    """FaceNet Inception-ResNet-v1 (512-d), MTCNN alignment with keras-facenet's margins."""

    name = "facenet"
    input_size = 160
    embedding_size = 512

    class Params(BaseParams):
        key: Literal["20180402-114759", "20180408-102900"] = "20180402-114759"
        """20180402-114759 was trained on VGGFace2, 20180408-102900 on CASIA-WebFace."""
        weights: str | None = None
        """A local keras-facenet weights file (h5); else $FACERECON_FACENET_WEIGHTS or download."""

    params: Params
    _network: keras.Model | None = None

    def network(self) -> keras.Model:
        """The pretrained network; weights are found (see :func:`weights_path`) before building."""
        if self._network is None:
            path = weights_path(self.params.key, self.params.weights)
            model = build_network(self.embedding_size)
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


@hookimpl
def register_models(register: Callable[[type], None]) -> None:
    register(FaceNet)
