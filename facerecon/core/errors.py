"""The one exception type users see: a single clear line, never a traceback; and the hint
that names the closest valid choices."""

from __future__ import annotations

import difflib
from collections.abc import Sequence


class FaceReconError(Exception):
    """A user-facing error; ``str(error)`` is the whole message (one line per problem)."""

    def __init__(self, message: str, *, lines: list[str] | None = None) -> None:
        self.lines = lines if lines is not None else [message]
        super().__init__(message if lines is None else "\n".join(lines))


def did_you_mean(value: object, choices: Sequence[str], n: int = 3, cutoff: float = 0.6) -> str:
    """`` (did you mean 'a' or 'b'?)`` for the choices closest to ``value``, else ""."""
    if not isinstance(value, str):
        return ""
    near = difflib.get_close_matches(value, list(choices), n=n, cutoff=cutoff)
    return f" (did you mean {' or '.join(repr(c) for c in near)}?)" if near else ""
