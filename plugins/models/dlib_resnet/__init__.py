"""The ``dlib-resnet`` face model plugin (dlib's face-recognition ResNet in Keras)."""

from __future__ import annotations

from collections.abc import Callable

from facerecon.core.hookspecs import hookimpl

from .model import DlibResnet


@hookimpl
def register_models(register: Callable[[type], None]) -> None:
    """Provide :class:`DlibResnet`."""
    register(DlibResnet)


__all__ = ["DlibResnet", "register_models"]
