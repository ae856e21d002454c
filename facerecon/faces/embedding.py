"""Embedding many faces: chips streamed through the model's one forward pass in chunks, as
unit rows. A collection, a calibration set and a judge's references all go through here."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from facerecon.core.kinds import FaceModel
from facerecon.ops.forward import forward_for

#: chips per forward call: bounds memory, since only one chunk's chips are held at a time
CHUNK = 32


def unit(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero)."""
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def embed(model: FaceModel, chips: np.ndarray) -> np.ndarray:
    """Unit embeddings of model-ready chips (one forward pass per :data:`CHUNK`)."""
    return embed_stream(model, iter(np.asarray(chips, np.float32)))[0]


def embed_stream(
    model: FaceModel,
    chips: Iterable[np.ndarray | None],
    step: Callable[[], None] = lambda: None,
) -> tuple[np.ndarray, list[int]]:
    """Unit embeddings of the chips as they stream by (None: no face, skipped) and the
    indices of the chips embedded; ``step`` is called once per item."""
    forward, pending, rows, kept = forward_for(model), [], [], []
    for index, chip in enumerate(chips):
        if chip is not None:
            pending.append(np.asarray(chip, np.float32))
            kept.append(index)
        if len(pending) == CHUNK:
            rows.append(forward.numpy(np.stack(pending))[0])
            pending = []
        step()
    if pending:
        rows.append(forward.numpy(np.stack(pending))[0])
    if not rows:
        return np.zeros((0, model.embedding_size), np.float32), kept
    return unit(np.concatenate(rows)).astype(np.float32), kept
