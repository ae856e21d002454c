"""Where a face model's chip lies in the generator's frame, measured once per model.

FFHQ frames are aligned (eyes and mouth at nearly fixed places), so one square box per
model, found on a few generated faces by the model's own alignment, cuts its chip out of
any frame without a per-image alignment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import scipy.optimize
import tensorflow as tf

from facerecon.core.cache import cache_dir
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import FaceModel

#: generated faces the box is measured on, and their truncation (typical, well-formed faces)
SAMPLES = 8
TRUNCATION = 0.7
#: where the search starts: dlib's chip in the FFHQ frame, as (centre y, centre x, side)
START = (0.6075, 0.504, 0.70)


@dataclass(frozen=True)
class Box:
    """A square in the frame, in fractions of its side: centre and side length."""

    y: float
    x: float
    side: float

    def corners(self) -> tuple[float, float, float, float]:
        """(y1, x1, y2, x2), as tf.image.crop_and_resize takes boxes."""
        half = self.side / 2
        return (self.y - half, self.x - half, self.y + half, self.x + half)


def _sample(frame: np.ndarray, box: Box, size: int) -> np.ndarray:
    """The ``size`` x ``size`` bilinear samples of ``box`` in ``frame`` (H, W, 3)."""
    y1, x1, y2, x2 = box.corners()
    n = frame.shape[0]
    # pixel centres of the output grid, in input pixel coordinates
    ys = (y1 + (np.arange(size) + 0.5) / size * (y2 - y1)) * n - 0.5
    xs = (x1 + (np.arange(size) + 0.5) / size * (x2 - x1)) * n - 0.5
    grid = np.meshgrid(ys, xs, indexing="ij")
    return np.stack(
        [scipy.ndimage.map_coordinates(frame[..., c], grid, order=1) for c in range(3)], -1
    )


def fit_box(frame: np.ndarray, chip: np.ndarray, start: Box) -> tuple[Box, float]:
    """The square of ``frame`` whose resampling best matches ``chip`` (mean squared
    difference, on a 64-pixel version of both), and that difference."""
    size = 64
    small_chip = _sample(chip, Box(0.5, 0.5, 1.0), size)
    side = frame.shape[0] * start.side
    # blur the frame about as much as the downsampling to `size` pixels does
    sigma = max(side / size / 2 - 0.5, 0)
    smooth = scipy.ndimage.gaussian_filter(frame, (sigma, sigma, 0))

    def cost(v: np.ndarray) -> float:
        return float(np.mean((_sample(smooth, Box(*v), size) - small_chip) ** 2))

    found = scipy.optimize.minimize(
        cost, np.array([start.y, start.x, start.side]), method="Nelder-Mead",
        options={"xatol": 1e-4, "fatol": 1e-7, "maxiter": 400},
    )  # fmt: skip
    return Box(*map(float, found.x)), float(found.fun)


def measure(model: FaceModel, frames: np.ndarray) -> Box:
    """The median box of ``model``'s chip over ``frames`` (N, H, W, 3) in [0, 1]."""
    boxes = []
    for frame in frames:
        chips = model.align(frame)
        if not chips:
            continue
        box, _ = fit_box(frame, chips[0].image, Box(*START))
        boxes.append((box.y, box.x, box.side))
    if len(boxes) < len(frames) // 2:
        raise FaceReconError(
            f"model {model.name!r} found a face in only {len(boxes)} of {len(frames)} generated "
            "frames: its chip cannot be placed in the generator's frame"
        )
    return Box(*map(float, np.median(np.array(boxes), axis=0)))


def model_box(model: FaceModel, generate) -> Box:
    """The box of ``model``'s chip, measured once on ``generate(SAMPLES)`` frames and cached."""
    path = cache_dir("stylegan") / f"box-{model.name}-{model.input_size}.json"
    if path.is_file():
        return Box(**json.loads(path.read_text()))
    box = measure(model, generate(SAMPLES))
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(box.__dict__))
    partial.replace(path)
    return box


def crop(frames: tf.Tensor, box: Box, size: int) -> tf.Tensor:
    """Each frame's ``box`` resampled to ``size`` x ``size``, differentiably.

    The frame is first average-pooled by the largest power of two that keeps the box at
    least ``size`` pixels wide, so the bilinear resampling never skips pixels (no aliasing).
    """
    factor = 1
    while frames.shape[1] * box.side / (factor * 2) >= size and factor < 8:
        factor *= 2
    if factor > 1:
        frames = tf.nn.avg_pool2d(frames, factor, factor, "VALID")
    count = tf.shape(frames)[0]
    # crop_and_resize samples corner to corner: move the box in by half an output pixel
    y1, x1, y2, x2 = box.corners()
    n = frames.shape[1]
    step = (y2 - y1) / size
    inner = [y1 + step / 2 - 0.5 / n, x1 + step / 2 - 0.5 / n,
             y2 - step / 2 - 0.5 / n, x2 - step / 2 - 0.5 / n]  # fmt: skip
    boxes = tf.tile(tf.constant([inner], tf.float32), [count, 1])
    scale = n / (n - 1)  # crop_and_resize maps 0..1 to the first..last pixel centre
    return tf.image.crop_and_resize(
        frames, boxes * scale, tf.range(count), [size, size], method="bilinear"
    )
