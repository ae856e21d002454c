"""Five-point alignment to the ArcFace template at 224x224, from dlib's 68 landmarks.

:func:`align_photo` finds faces with dlib's HOG detector; :func:`align_chip` re-aligns an
image that already is a face chip (another model's input, or a reconstruction that may not
look natural enough to be detected), falling back to a box fixed in proportion to the chip.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import skimage.transform

from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import FaceChip
from facerecon.faces.photos import as_rgb
from facerecon_plugins.models.dlib_resnet.align import to_rgb_uint8
from facerecon_plugins.models.dlib_resnet.model import packaged_model_file

CHIP_SIZE = 224
LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
# ArcFace's 112x112 template: eye centres, nose tip, mouth corners (x, y).
ARCFACE_112 = np.array(
    [
        (38.2946, 51.6963),
        (73.5318, 51.5014),
        (56.0252, 71.7366),
        (41.5493, 92.3655),
        (70.7299, 92.2041),
    ],
    dtype=np.float64,
)
TEMPLATE = ARCFACE_112 * (CHIP_SIZE / 112)
# Where dlib's detector puts the face in a chip, as fractions of its width and height (left,
# top, right, bottom): (10, 10, 135, 135) on every dlib-resnet 150x150 chip (padding 0.25)
# measured; landmarks found in this box are within 2 px of those found in the detection.
CHIP_FACE_BOX = (10 / 150, 10 / 150, 135 / 150, 135 / 150)
_MIN_OVERLAP = 0.5  # a detection in a chip this far from the expected box is a false find


@functools.cache
def _dlib_models() -> tuple[Any, Any]:
    # One detector and 68-point predictor per process.
    import dlib

    predictor = dlib.shape_predictor(str(packaged_model_file(LANDMARKS_FILE)))
    return dlib.get_frontal_face_detector(), predictor


def five_points(shape: Any) -> np.ndarray:
    """Eye centres, nose tip and mouth corners (5, 2) from a dlib 68-point ``shape``."""
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    return np.stack(
        [points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]
    )


def _similarity(points: np.ndarray, template: np.ndarray) -> skimage.transform.SimilarityTransform:
    """The least-squares similarity taking ``points`` to ``template``."""
    similarity = skimage.transform.SimilarityTransform
    if hasattr(similarity, "from_estimate"):  # scikit-image >= 0.26 deprecates estimate()
        transform = similarity.from_estimate(points, template)
    else:
        transform = similarity()
        transform = transform if transform.estimate(points, template) else None
    if not transform:
        raise FaceReconError(f"cannot align face landmarks {points.round(1).tolist()}")
    return transform


def warp_to_template(
    image: np.ndarray, points: np.ndarray, template: np.ndarray = TEMPLATE, size: int = CHIP_SIZE
) -> np.ndarray:
    """The (size, size, 3) float32 chip whose five ``points`` best match ``template`` (the
    ArcFace points scaled to 224, by default)."""
    transform = _similarity(points, template)
    if transform.scale < 0.5:
        # Shrinking by more than 2 aliases under bilinear sampling: low-pass first.
        factor = 2.0 * transform.scale
        small = skimage.transform.rescale(image, factor, anti_aliasing=True, channel_axis=2)
        actual = np.array(small.shape[1::-1]) / np.array(image.shape[1::-1])
        image, points = small, points * actual
        transform = _similarity(points, template)
    chip = skimage.transform.warp(
        image, transform.inverse, output_shape=(size, size), order=1, mode="edge"
    )
    return np.clip(chip, 0.0, 1.0).astype(np.float32)


def align_photo(
    photo: np.ndarray, template: np.ndarray = TEMPLATE, size: int = CHIP_SIZE
) -> list[FaceChip]:
    """Every face dlib finds in an RGB [0, 1] photo, largest first, warped to ``template``
    in a ``size`` chip; upsamples once if none is found."""
    detector, predictor = _dlib_models()
    image = as_rgb(photo)
    pixels = to_rgb_uint8(image)
    faces = list(detector(pixels, 0)) or list(detector(pixels, 1))
    faces.sort(key=lambda rect: rect.area(), reverse=True)
    height, width = pixels.shape[:2]
    chips = []
    for rect in faces:
        chip = warp_to_template(image, five_points(predictor(pixels, rect)), template, size)
        box = (
            max(rect.left(), 0),
            max(rect.top(), 0),
            min(rect.right() + 1, width),
            min(rect.bottom() + 1, height),
        )
        chips.append(FaceChip(chip, box))
    return chips


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def chip_face_box(chip: np.ndarray) -> tuple[float, float, float, float]:
    """Where the face should be in a chip of this shape: :data:`CHIP_FACE_BOX` scaled."""
    height, width = chip.shape[:2]
    left, top, right, bottom = CHIP_FACE_BOX
    return (left * width, top * height, right * width, bottom * height)


def align_chip(
    chip: np.ndarray, template: np.ndarray = TEMPLATE, size: int = CHIP_SIZE
) -> np.ndarray:
    """Re-align a face chip (face centred, e.g. a dlib 150x150 chip) to ``template`` in a
    (size, size, 3) chip (224 and the ArcFace points scaled to it, by default).

    The detection nearest the expected box is used when it overlaps it well; otherwise the
    landmarks are found inside the expected box itself, so unnatural faces still align.
    """
    import dlib

    detector, predictor = _dlib_models()
    image = as_rgb(chip)
    pixels = to_rgb_uint8(image)
    expected = chip_face_box(chip)
    rect = dlib.rectangle(*(round(v) for v in expected))
    found = list(detector(pixels, 0)) or list(detector(pixels, 1))
    if found:
        best = max(found, key=lambda r: _overlap(_box(r), expected))
        if _overlap(_box(best), expected) >= _MIN_OVERLAP:
            rect = best
    return warp_to_template(image, five_points(predictor(pixels, rect)), template, size)


def _box(rect: Any) -> tuple[float, float, float, float]:
    # dlib's rectangles are inclusive on the right and bottom.
    return (rect.left(), rect.top(), rect.right() + 1.0, rect.bottom() + 1.0)
