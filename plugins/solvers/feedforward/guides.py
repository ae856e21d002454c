"""Where a guided generator's guides come from when it makes its own: each template's
nearest strangers (:mod:`facerecon.faces.neighbours`), the same in training and in use."""

from __future__ import annotations

from pathlib import Path

from facerecon.core.kinds import FaceModel
from facerecon.faces.neighbours import Strangers

from .generator import GeneratorConfig


def own_guides(config: GeneratorConfig, model: FaceModel, base_dir: Path = Path(".")):
    """The :class:`Strangers` that give this generator its guides, or None when the
    caller gives them (the spec's guide images, ``--guide``)."""
    if not config.nearest:
        return None
    n = config.nearest
    return Strangers(model, n["images"], n["align"], n["k"], base_dir)
