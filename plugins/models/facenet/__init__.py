"""The ``facenet`` face model plugin: FaceNet Inception-ResNet-v1 with Sandberg's weights."""

from __future__ import annotations

from collections.abc import Callable

from facerecon.core.hookspecs import hookimpl

from .keras_weights import DOWNLOAD_TIMEOUT, WEIGHTS_ENV, weights_path
from .model import FaceNet
from .network import STD_OFFSET, STD_SCALE, TAP_LAYERS, build_network, load_h5_weights


@hookimpl
def register_models(register: Callable[[type], None]) -> None:
    """Provide :class:`FaceNet`."""
    register(FaceNet)


__all__ = [
    "DOWNLOAD_TIMEOUT",
    "STD_OFFSET",
    "STD_SCALE",
    "TAP_LAYERS",
    "WEIGHTS_ENV",
    "FaceNet",
    "build_network",
    "load_h5_weights",
    "register_models",
    "weights_path",
]
