"""``mtcnn``: the MTCNN face detector (Zhang et al., 2016) from the ``mtcnn`` package.

A cascade of three small CNNs trained to find faces and landmarks, not to tell people
apart: a judge of whether a reconstruction looks like a face at all. Its weights ship
inside the package, so it works offline.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from pydantic import Field

from facerecon import Detection, Detector, Params, hookimpl
from facerecon.faces.photos import as_rgb


@cache
def network():
    """The process's one MTCNN (the facenet model aligns with it too)."""
    from mtcnn import MTCNN

    return MTCNN()


class Mtcnn(Detector):
    """Faces MTCNN finds with at least ``min_confidence``, most confident first."""

    name = "mtcnn"

    class Params(Params):
        min_confidence: float = Field(0.9, ge=0, le=1, description="lowest face score kept")
        margin: float = Field(
            0.25,
            ge=0,
            le=2,
            description="gray border added around the image (share of its size), so a face "
            "that fills a tight chip is still seen whole",
        )

    def detect(self, image: np.ndarray) -> list[Detection]:
        rgb = as_rgb(image)
        pad = int(round(self.params.margin * max(rgb.shape[:2])))
        framed = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), constant_values=0.5)
        found = network().detect_faces(np.round(framed * 255).astype(np.uint8))
        out = []
        for face in found:
            if face["confidence"] < self.params.min_confidence:
                continue
            x, y, w, h = face["box"]
            box = (x - pad, y - pad, x - pad + w, y - pad + h)
            out.append(Detection(box, float(face["confidence"])))
        return sorted(out, key=lambda d: -d.score)


@hookimpl
def register_detectors(register):
    register(Mtcnn)
