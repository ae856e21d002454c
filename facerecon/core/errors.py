"""The one exception type users see: a single clear line, never a traceback."""

from __future__ import annotations


class FaceReconError(Exception):
    """A user-facing error; ``str(error)`` is the whole message (one line per problem)."""

    def __init__(self, message: str, *, lines: list[str] | None = None) -> None:
        self.lines = lines if lines is not None else [message]
        super().__init__(message if lines is None else "\n".join(lines))
