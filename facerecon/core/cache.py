"""Where facerecon keeps derived files (converted weights, face statistics)."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import platformdirs


def cache_dir(*parts: str) -> Path:
    """The cache folder (``FACERECON_CACHE_DIR`` or the user cache dir), created on demand."""
    root = os.environ.get("FACERECON_CACHE_DIR") or platformdirs.user_cache_dir("facerecon")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cached(folder: str, name: str, key: str, suffix: str, load, save, compute):
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = cache_dir(folder) / f"{name}-{digest}{suffix}"
    if path.is_file():
        try:
            return load(path)
        except Exception as error:  # truncated, emptied, overwritten: whatever the damage
            why = f"{type(error).__name__}: {error}".splitlines()[0][:200]
            warnings.warn(
                f"cache file {path} is damaged ({why}); computed again and replaced",
                stacklevel=3,
            )
    value = compute()
    partial = path.with_suffix(f".{os.getpid()}{suffix}")
    try:
        save(partial, value)
        partial.replace(path)  # whole or absent: concurrent runs never read half a file
    except OSError as error:  # a full or read-only cache costs the computation next time
        partial.unlink(missing_ok=True)
        warnings.warn(
            f"cannot keep {path} in the cache ({error.strerror or error}); it is computed "
            "again next time",
            stacklevel=3,
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return value


def cached_array(folder: str, name: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()``, kept as ``<folder>/<name>-<hash of key>.npy`` in the cache and read
    from there next time; ``key`` must name everything the array depends on. A damaged
    cache file is computed again and replaced (with a warning)."""
    return _cached(folder, name, key, ".npy", np.load, np.save, compute)


def cached_arrays(
    folder: str, name: str, key: str, compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """:func:`cached_array` for several arrays computed together (kept as one ``.npz``)."""

    def load(path: Path) -> dict[str, np.ndarray]:
        with np.load(path) as stored:
            return dict(stored)

    return _cached(folder, name, key, ".npz", load, lambda path, a: np.savez(path, **a), compute)


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """One sha256 over named arrays (names, dtypes, shapes and bytes, in name order): what a
    cache of converted weights stores to tell an intact file from a damaged one."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
