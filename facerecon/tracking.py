"""Where runs are tracked: the embedded sqlite store unless MLFLOW_TRACKING_URI says otherwise."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"


def tracking_uri() -> str:
    """The tracking URI in force; creates ``mlruns/`` for the embedded default."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri == DEFAULT_URI:
        Path("mlruns").mkdir(exist_ok=True)
    return uri


def absolute_uri(uri: str) -> str:
    """A sqlite URI with its relative path made absolute (for processes started elsewhere)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested spec data as MLflow params: ``loss.regularizers.0.weight -> "0.002"``."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return {prefix: str(data)}
    out: dict[str, str] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def git_commit() -> str | None:
    """The commit of the facerecon checkout this code runs from, if it is one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
