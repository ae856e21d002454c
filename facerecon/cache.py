"""Where facerecon keeps derived files (converted weights, face statistics)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir(*parts: str) -> Path:
    """The cache folder (``FACERECON_CACHE_DIR`` or the user cache dir), created on demand."""
    root = os.environ.get("FACERECON_CACHE_DIR") or platformdirs.user_cache_dir("facerecon")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
