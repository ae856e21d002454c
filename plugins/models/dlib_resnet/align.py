"""dlib's own alignment: frontal face detector, 5-point landmarks, ``get_face_chip``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import FaceChip
from facerecon.faces.photos import as_rgb

CHIP_SIZE = 150
CHIP_PADDING = 0.25  # the padding dlib's face-recognition example and model use


def to_rgb_uint8(photo: np.ndarray) -> np.ndarray:
    """A contiguous uint8 RGB copy of a photo, the way dlib reads images."""
    return np.ascontiguousarray(np.round(as_rgb(photo) * 255.0).astype(np.uint8))


class DlibAligner:
    """Finds faces and cuts dlib-style 150x150 chips; dlib's models load on first use."""

    def __init__(self, predictor_path: str | Path) -> None:
        self._predictor_path = predictor_path
        self._detector = None
        self._predictor = None

    def _load(self) -> None:
        import dlib

        path = self._predictor_path
        if not Path(path).is_file():
            raise FaceReconError(f"dlib landmark model {path} does not exist")
        self._detector = dlib.get_frontal_face_detector()
        try:
            self._predictor = dlib.shape_predictor(str(path))
        except RuntimeError as error:
            raise FaceReconError(f"cannot load dlib landmark model {path}: {error}") from None

    def __call__(self, photo: np.ndarray) -> list[FaceChip]:
        """Every face in ``photo``, largest first; upsamples once if none is found."""
        import dlib

        if self._predictor is None:
            self._load()
        image = to_rgb_uint8(photo)
        faces = list(self._detector(image, 0))
        if not faces:
            faces = list(self._detector(image, 1))
        faces.sort(key=lambda rect: rect.area(), reverse=True)
        height, width = image.shape[:2]
        chips = []
        for rect in faces:
            shape = self._predictor(image, rect)
            chip = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
            # dlib's rectangles are inclusive; the box is exclusive on the right/bottom.
            box = (
                max(rect.left(), 0),
                max(rect.top(), 0),
                min(rect.right() + 1, width),
                min(rect.bottom() + 1, height),
            )
            chips.append(FaceChip(np.asarray(chip, dtype=np.float32) / np.float32(255), box))
        return chips
