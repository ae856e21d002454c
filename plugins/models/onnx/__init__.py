"""The ``onnx`` model family (any ONNX face recognizer) and its built-in ``mobilefacenet``."""

from __future__ import annotations

from collections.abc import Callable

from facerecon.core.hookspecs import hookimpl

from .mobilefacenet import MobileFaceNet
from .model import Onnx


@hookimpl
def register_models(register: Callable[[type], None]) -> None:
    """Provide :class:`Onnx` and :class:`MobileFaceNet`."""
    register(Onnx)
    register(MobileFaceNet)


__all__ = ["MobileFaceNet", "Onnx", "register_models"]
