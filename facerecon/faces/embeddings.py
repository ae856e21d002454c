"""Embedding files and arrays as users hand them over: one clear line for each way they go
wrong (the shape check is the caller's, which knows the model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facerecon.core.errors import FaceReconError


def read_npy(path: str | Path) -> np.ndarray:
    """The one array of an ``.npy`` file (``.npz`` archives and pickles are refused)."""
    path = Path(path)
    if not path.exists():
        raise FaceReconError(f"{path}: embedding file not found")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise FaceReconError(f"{path}: not a .npy array ({type(exc).__name__}: {exc})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        names = ", ".join(data.files) or "no arrays"
        data.close()
        raise FaceReconError(
            f"{path}: an .npz archive ({names}); save one array with numpy.save (.npy)"
        )
    return data


def numeric(data: object, where: str) -> np.ndarray:
    """``data`` as float32, or an error when it holds no numbers (strings, objects)."""
    array = np.asarray(data)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise FaceReconError(
            f"{where}: embedding of dtype {array.dtype}; expected numbers (float32 or float64)"
        )
    return array.astype(np.float32)


def check_rows(rows: np.ndarray, where: str) -> None:
    """At least one row, only finite values (a NaN would silently become a NaN image), and
    a norm whose square is positive and finite in float32, as the objective takes it (a
    zero row has no direction to normalize; an overflowing one is infinitely far)."""
    if rows.shape[0] == 0:
        raise FaceReconError(f"{where}: embedding of shape {rows.shape} holds no rows")
    if not np.all(np.isfinite(rows)):
        raise FaceReconError(f"{where}: embedding holds NaN or infinite values")
    flat = rows.reshape(rows.shape[0], -1).astype(np.float32)
    with np.errstate(over="ignore", under="ignore"):
        squares = np.einsum("ij,ij->i", flat, flat)
    for bad, why in (
        (squares == 0, "has norm 0 (all zeros, or too small for float32)"),
        (~np.isfinite(squares), "has a norm whose square overflows float32 (over 3.4e38)"),
    ):
        if bad.any():
            found = np.flatnonzero(bad)
            which = ", ".join(str(i) for i in found[:5]) + (
                f" and {len(found) - 5} more" if len(found) > 5 else ""
            )
            raise FaceReconError(
                f"{where}: {'row' if len(found) == 1 else 'rows'} {which} of the embedding "
                f"{why}; give a face model's embedding"
            )
