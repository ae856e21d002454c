"""The ``dlib-resnet`` face model: dlib's ResNet rebuilt in Keras, with dlib's alignment."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import facerecon.core.kinds
from facerecon.core.cache import arrays_sha256, cache_dir
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import FaceChip, FaceModel
from facerecon.judges.calibration import load_thresholds

from . import network
from .align import DlibAligner
from .reader import read_bytes, read_dlib_net

if TYPE_CHECKING:
    import keras

WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
# Bump when the cached arrays change meaning (names, folding), so old caches are rebuilt.
CACHE_FORMAT = 1
_META_KEY = "__meta__"


def packaged_model_file(filename: str) -> Path:
    """A model file shipped by ``face_recognition_models`` (or its ``-ng`` fork)."""
    # Both distributions install the same import package; find it without importing it,
    # since the original imports pkg_resources, which newer setuptools no longer ships.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceReconError(
            f"{filename} comes with the face_recognition_models package, which is not "
            "installed: pip install face-recognition-models"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder, "models", filename)
        if path.is_file():
            return path
    raise FaceReconError(f"face_recognition_models is installed but has no models/{filename}")


@functools.cache
def _aligner(predictor_path: Path) -> DlibAligner:
    # One detector and landmark model per process, however many model instances exist.
    return DlibAligner(predictor_path)


def _fingerprint(path: Path) -> dict[str, object]:
    data = read_bytes(path)
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _read_cache(path: Path, source: dict[str, object]) -> dict[str, np.ndarray] | None:
    """The cached arrays if they were made from ``source`` and are intact, else None."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        meta = json.loads(str(arrays.pop(_META_KEY)))
    except Exception:  # a damaged cache, whatever the damage, is rebuilt
        return None
    expected = {"format": CACHE_FORMAT, **source, "arrays_sha256": arrays_sha256(arrays)}
    return arrays if meta == expected else None


def _write_cache(path: Path, source: dict[str, object], arrays: dict[str, np.ndarray]) -> None:
    meta = {"format": CACHE_FORMAT, **source, "arrays_sha256": arrays_sha256(arrays)}
    # Written next to the target and renamed, so a reader never sees half a file.
    handle, temp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays, **{_META_KEY: np.array(json.dumps(meta))})
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """Keras-ready arrays for the .dat at ``path``, from the cache when it matches the file."""
    source = _fingerprint(path)
    try:
        cached: Path | None = cache_dir("dlib-resnet") / f"{source['sha256']}.npz"
    except OSError:  # no usable cache folder only costs the conversion every time
        cached = None
    arrays = _read_cache(cached, source) if cached else None
    if arrays is None:
        arrays = network.convert(read_dlib_net(path), str(path))
        if cached:
            with contextlib.suppress(OSError):
                _write_cache(cached, source, arrays)
    return arrays


class DlibResnet(FaceModel):
    """dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``).

    Input: float32 RGB in [0, 1], (N, 150, 150, 3), a chip cut the way
    ``dlib.get_face_chip(img, shape, size=150, padding=0.25)`` does. Output: the raw 128-d
    fc output (not normalized; norms are about 1.3 to 1.5; dlib's same-person threshold
    is a Euclidean distance of 0.6).

    Tap layers, input side upwards (all ReLU outputs unless noted):

    - ``conv1`` (72, 72, 32): 7x7/2 convolution; ``pool1`` (35, 35, 32): 3x3/2 max pool.
    - ``stageS_blockB``: output of each residual block; ``stageS``: the stage's output
      (an identity on its last block). Stage 1: 3 blocks at (35, 35, 32); stage 2:
      4 at (17, 17, 64); stage 3: 3 at (8, 8, 128); stage 4: 3 at (4, 4, 256);
      stage 5: 1 at (2, 2, 256). The first block of stages 2-5 halves the map.
    - ``pool_global`` (256,): global average pool, the input of the fc ``embedding``.
    """

    name = "dlib-resnet"
    input_size = network.INPUT_SIZE
    embedding_size = network.EMBEDDING_SIZE
    # Made by `facerecon calibrate dlib-resnet --photos builtin:radar --photos builtin:obama`.
    thresholds = load_thresholds(Path(__file__).with_name("thresholds.json"))
    default_judge = True  # judges runs that name no judges, when another model is attacked

    class Params(facerecon.core.kinds.Params):
        """``weights``: a dlib network .dat; default: the one face_recognition_models ships."""

        weights: str | None = None

    def __init__(self, params: facerecon.core.kinds.Params | None = None) -> None:
        super().__init__(params)
        self._network: keras.Model | None = None

    def weights_path(self) -> Path:
        """The .dat file the network is read from."""
        weights = self.params.weights
        return Path(weights).expanduser() if weights else packaged_model_file(WEIGHTS_FILE)

    def network(self) -> keras.Model:
        if self._network is None:
            self._network = network.build(load_weights(self.weights_path()))
        return self._network

    def tap_layers(self) -> Sequence[str]:
        return network.tap_layer_names()

    def align(self, photo: np.ndarray) -> list[FaceChip]:
        return _aligner(packaged_model_file(LANDMARKS_FILE))(photo)
