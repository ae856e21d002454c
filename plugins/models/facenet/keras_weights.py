"""keras-facenet's converted weight files (Keras 2 h5): a given file, or its verified cache
``~/.keras-facenet``, downloaded into it when possible."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

from facerecon import FaceReconError

log = logging.getLogger(__name__)

WEIGHTS_ENV = "FACERECON_FACENET_WEIGHTS"
DOWNLOAD_TIMEOUT = 10.0  # seconds per socket operation: offline machines fail fast, no hang


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # urllib.request.urlretrieve (used by keras-facenet) takes no timeout of its own.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def weights_path(key: str, local: str | None = None) -> str:
    """The weights file for ``key``: ``local``, else $FACERECON_FACENET_WEIGHTS, else
    keras-facenet's verified cache (``~/.keras-facenet``), downloading into it when possible.

    A local file is used as given (the user vouches for it); only a mismatch with the published
    sha256 is logged, since fine-tuned weights are legitimate.
    """
    from keras_facenet.metadata import MODEL_METADATA
    from keras_facenet.utils import download_and_verify, sha256sum

    meta = MODEL_METADATA[key]
    sha, url = meta["keras_weights_sha256"], meta["keras_weights_url"]
    filename = meta["keras_weights_filename"]
    remedy = (
        f"download {filename} from {url} (sha256 {sha}) and pass it as model param "
        f"`weights: <path>` or set {WEIGHTS_ENV}=<path>."
    )
    source = "model param weights" if local else WEIGHTS_ENV
    local = local or os.environ.get(WEIGHTS_ENV)
    if local:
        if not os.path.isfile(local):
            raise FaceReconError(f"FaceNet weights file {local} ({source}) not found: {remedy}")
        if sha256sum(local) != sha:
            log.warning(
                "%s is not the published %s (sha256 %s); using it as given.", local, filename, sha
            )
        return local

    cached = os.path.join(os.path.expanduser("~/.keras-facenet"), meta["dir_name"], filename)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT):
            download_and_verify(url=url, filepath=cached, sha256=sha)
        # download_and_verify checks with `assert`, which `python -O` strips.
        if sha256sum(cached) != sha:
            raise AssertionError
    except (OSError, AssertionError) as err:
        reason = str(err) or type(err).__name__
        if isinstance(err, AssertionError):
            reason = "sha256 mismatch"
        raise FaceReconError(f"No FaceNet weights {key} in {cached} ({reason}): {remedy}") from None
    return cached
