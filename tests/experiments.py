"""Every spec under experiments/, validated as a fresh checkout would, without fetching."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import skimage.io

from facerecon import api
from facerecon.core.spec import Spec
from facerecon.engine.sweep import expand

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
SPECS = sorted(EXPERIMENTS.rglob("*.yaml"))
#: inputs the specs' comments tell users to make first (gitignored): folder -> frame count
MADE_BY_COMMAND = {"feedforward/frames/astronaut": 2}


def validated(path: Path, tmp_path: Path) -> list[Spec]:
    """The spec at ``path`` and every sweep variant of it, validated in a copy of
    experiments/ where the made-by-command inputs exist."""
    copy = tmp_path / "experiments"
    shutil.copytree(EXPERIMENTS, copy, ignore=shutil.ignore_patterns("frames"))
    for folder, count in MADE_BY_COMMAND.items():
        (copy / folder).mkdir(parents=True)
        for i in range(count):
            skimage.io.imsave(
                copy / folder / f"{i:03d}.png", np.zeros((8, 8, 3), np.uint8), check_contrast=False
            )
    (spec,) = api.validate(copy / path.relative_to(EXPERIMENTS))
    return [v.spec for v in expand(spec)] if spec.sweep else [spec]
