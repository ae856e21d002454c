"""Image grids for logs and reports (uint8 RGB, white gutters)."""

from __future__ import annotations

import numpy as np

from facerecon.faces import resize


def grid(rows: list[list[np.ndarray | None]], size: int, gap: int = 4) -> np.ndarray:
    """Tile float [0, 1] images into a uint8 grid; ``None`` cells stay light gray."""
    cols = max(len(r) for r in rows)
    out = np.ones((len(rows) * (size + gap) + gap, cols * (size + gap) + gap, 3), np.float32)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            y, x = gap + i * (size + gap), gap + j * (size + gap)
            cell = np.full((size, size, 3), 0.85, np.float32) if image is None else image
            if cell.shape[:2] != (size, size):
                cell = resize(cell, size)
            out[y : y + size, x : x + size] = cell
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
