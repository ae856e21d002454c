"""The ``faceres`` face model plugin (HSE's face-description MobileNet, read from TF.js)."""

from __future__ import annotations

from collections.abc import Callable

from facerecon.core.hookspecs import hookimpl

from .model import Faceres


@hookimpl
def register_models(register: Callable[[type], None]) -> None:
    """Provide :class:`Faceres`."""
    register(Faceres)


__all__ = ["Faceres", "register_models"]
