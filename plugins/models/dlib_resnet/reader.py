"""Strict pure-Python reader of a dlib DNN file (``dlib::serialize(net, ...)`` output).

It reads the generic layer records of a ``loss_metric`` network built from the layer
types dlib's face-recognition ResNet uses, checking every type tag and field; anything
else (a truncated file, an unknown tag, bytes after the end) is a :class:`FaceReconError`
naming the file and the byte offset. Which layer feeds which is not stored in the file:
:mod:`.network` matches the records against the known architecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerecon.core.errors import FaceReconError

# dlib encodes these exponents for non-finite floats.
_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
_MAX_STRING = 256  # type tags are short; a huge length means this is not a dlib file
_MAX_DIM = 1 << 24


@dataclass(frozen=True)
class LossMetric:
    """The ``loss_metric`` top: only meaningful for training."""

    margin: float
    distance_threshold: float


@dataclass(frozen=True)
class InputRGB:
    """``input_rgb_image_sized``: per-channel means (R, G, B) and the fixed input size."""

    mean: tuple[float, float, float]
    rows: int
    cols: int


@dataclass(frozen=True)
class Conv:
    """``con_``: filters (out, in, kh, kw), cross-correlation, padding on top/left."""

    filters: np.ndarray
    biases: np.ndarray | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    use_relu: bool


@dataclass(frozen=True)
class Affine:
    """``affine_`` in per-channel mode: ``y = x * gamma[c] + beta[c]``."""

    gamma: np.ndarray
    beta: np.ndarray
    disabled: bool


@dataclass(frozen=True)
class Relu:
    """``relu_``."""

    disabled: bool


@dataclass(frozen=True)
class Pool:
    """``max_pool_`` / ``avg_pool_``; size (0, 0) pools over the whole input."""

    kind: str  # "max" or "avg"
    size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class AddPrev:
    """``add_prev_``: adds a tagged earlier output (which one is not stored)."""


@dataclass(frozen=True)
class FullyConnected:
    """``fc_``: ``y = x @ weights (+ biases)``, weights shaped (inputs, outputs)."""

    weights: np.ndarray
    biases: np.ndarray | None


Layer = Conv | Affine | Relu | Pool | AddPrev | FullyConnected


@dataclass(frozen=True)
class DlibNet:
    """Everything a dlib metric-learning network file holds that matters for inference.

    ``wrappers`` are the wrapper versions from the outside in (1 for a tag or skip
    wrapper, 2 or 3 for a layer); ``layers`` are the layer records from the input upwards.
    """

    loss: LossMetric
    input: InputRGB
    wrappers: tuple[int, ...]
    layers: tuple[Layer, ...]


class _Stream:
    """A cursor over the file's bytes that fails with the file name and offset."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, message: str, at: int | None = None) -> FaceReconError:
        where = self.pos if at is None else at
        return FaceReconError(
            f"{self.path} is not a dlib face-recognition network file: {message} at byte {where}"
        )

    def take(self, count: int, what: str) -> bytes:
        if self.pos + count > len(self.data):
            raise self.fail(f"file ends in the middle of {what}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def integer(self, what: str) -> int:
        start = self.pos
        control = self.take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            raise self.fail(f"bad integer control byte 0x{control:02x} for {what}", start)
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def count(self, what: str, low: int = 0, high: int = _MAX_DIM) -> int:
        start = self.pos
        value = self.integer(what)
        if not low <= value <= high:
            raise self.fail(f"{what} is {value}, expected {low}..{high}", start)
        return value

    def expect(self, expected: int, what: str) -> None:
        start = self.pos
        value = self.integer(what)
        if value != expected:
            raise self.fail(f"{what} is {value}, expected {expected}", start)

    def real(self, what: str) -> float:
        start = self.pos
        mantissa = self.integer(what)
        exponent = self.integer(what)
        if abs(mantissa) >= 1 << 63 or abs(exponent) >= 1 << 15:
            raise self.fail(f"{what} does not fit dlib's float encoding", start)
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        return math.ldexp(mantissa, exponent)

    def string(self, what: str) -> str:
        start = self.pos
        length = self.integer(what)
        if not 0 <= length <= _MAX_STRING:
            raise self.fail(f"{what} has length {length}", start)
        raw = self.take(length, what)
        if not raw.isascii():
            raise self.fail(f"{what} is not text", start)
        return raw.decode("ascii")

    def tag(self, allowed: tuple[str, ...], what: str) -> str:
        start = self.pos
        found = self.string(what)
        if found not in allowed:
            raise self.fail(f"{what} is {found!r}, expected one of {', '.join(allowed)}", start)
        return found

    def boolean(self, what: str) -> bool:
        start = self.pos
        byte = self.take(1, what)
        if byte not in (b"0", b"1"):
            raise self.fail(f"{what} is {byte!r}, expected b'0' or b'1'", start)
        return byte == b"1"

    def tensor(self, what: str) -> np.ndarray:
        """A ``resizable_tensor``: version 2, n, k, nr, nc, then float32 data (NCHW)."""
        self.expect(2, f"{what} tensor version")
        shape = tuple(self.count(f"{what} tensor size") for _ in range(4))
        size = math.prod(shape)
        raw = self.take(4 * size, f"{what} tensor data")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def flat_tensor(self, what: str) -> np.ndarray:
        """A layer's parameter tensor: dlib keeps it as (size, 1, 1, 1)."""
        start = self.pos
        params = self.tensor(what)
        if params.shape[1:] != (1, 1, 1):
            raise self.fail(f"{what} tensor has shape {params.shape}, expected (n, 1, 1, 1)", start)
        return params.reshape(-1)

    def empty_tensor(self, what: str) -> None:
        start = self.pos
        if self.tensor(what).size:
            raise self.fail(f"{what} should be empty", start)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        """An ``alias_tensor``: version 1 and a 4-d shape, no data."""
        self.expect(1, f"{what} shape version")
        n, k, nr, nc = (self.count(f"{what} shape") for _ in range(4))
        return n, k, nr, nc


def _learning_rates(stream: _Stream, what: str) -> None:
    # Learning-rate and weight-decay multipliers: training-only, but part of the record.
    for _ in range(4):
        stream.real(f"{what} learning-rate multiplier")


def _read_conv(stream: _Stream, tag: str) -> Conv:
    at = stream.pos
    params = stream.flat_tensor("convolution parameter")
    out = stream.count("convolution filter count", 1)
    rows = stream.count("convolution kernel rows", 1)
    cols = stream.count("convolution kernel cols", 1)
    stride = (stream.count("convolution stride", 1), stream.count("convolution stride", 1))
    padding = (stream.count("convolution padding"), stream.count("convolution padding"))
    f_out, f_in, f_rows, f_cols = stream.alias("convolution filters")
    b_shape = stream.alias("convolution biases")
    if (f_out, f_rows, f_cols) != (out, rows, cols) or b_shape != (1, out, 1, 1):
        raise stream.fail("convolution shapes disagree with its filter count and kernel size")
    _learning_rates(stream, "convolution")
    use_bias = stream.boolean("convolution use-bias flag") if tag != "con_4" else True
    use_relu = stream.boolean("convolution use-relu flag") if tag == "con_6" else False
    n_filters = out * f_in * rows * cols
    if params.size != n_filters + (out if use_bias else 0):
        raise stream.fail(
            f"convolution has {params.size} parameters for filters {(out, f_in, rows, cols)}",
            at,
        )
    filters = params[:n_filters].reshape(out, f_in, rows, cols)
    biases = params[n_filters:] if use_bias else None
    return Conv(filters, biases, stride, padding, use_relu)


def _read_affine(stream: _Stream, tag: str) -> Affine:
    at = stream.pos
    params = stream.flat_tensor("affine parameter")
    gamma_shape = stream.alias("affine gamma")
    beta_shape = stream.alias("affine beta")
    mode = stream.integer("affine mode")
    if mode != 0:
        raise stream.fail(f"affine mode is {mode}; only per-channel mode (0) is supported")
    channels = gamma_shape[1]
    if gamma_shape != (1, channels, 1, 1) or beta_shape != gamma_shape:
        raise stream.fail(f"affine shapes {gamma_shape} / {beta_shape} are not per-channel")
    if params.size != 2 * channels:
        raise stream.fail(f"affine has {params.size} parameters for {channels} channels", at)
    disabled = stream.boolean("affine disabled flag") if tag == "affine_2" else False
    return Affine(params[:channels], params[channels:], disabled)


def _read_pool(stream: _Stream, tag: str) -> Pool:
    size = (stream.count("pool rows"), stream.count("pool cols"))
    stride = (stream.count("pool stride", 1), stream.count("pool stride", 1))
    padding = (stream.count("pool padding"), stream.count("pool padding"))
    return Pool("max" if tag.startswith("max") else "avg", size, stride, padding)


def _read_fc(stream: _Stream, tag: str) -> FullyConnected:
    outputs = stream.count("fc output count", 1)
    inputs = stream.count("fc input count", 1)
    at = stream.pos
    params = stream.tensor("fc parameter")
    w_shape = stream.alias("fc weights")
    b_shape = stream.alias("fc biases")
    bias_mode = stream.integer("fc bias mode")
    if bias_mode not in (0, 1):
        raise stream.fail(f"fc bias mode is {bias_mode}, expected 0 (bias) or 1 (no bias)")
    _learning_rates(stream, "fc")
    use_bias = bias_mode == 0
    if tag == "fc_3":
        use_bias = use_bias and stream.boolean("fc use-bias flag")
    bias_shapes = [(1, outputs, 1, 1)] if use_bias else [(1, outputs, 1, 1), (0, 0, 0, 0)]
    if w_shape != (inputs, outputs, 1, 1) or b_shape not in bias_shapes:
        raise stream.fail(f"fc shapes {w_shape} / {b_shape} disagree with {inputs}->{outputs}")
    # The biases, when used, are one more row of the (inputs, outputs) weight matrix.
    rows = inputs + 1 if use_bias else inputs
    if params.shape != (rows, outputs, 1, 1):
        raise stream.fail(
            f"fc parameter tensor has shape {params.shape}, expected {(rows, outputs, 1, 1)}", at
        )
    matrix = params.reshape(rows, outputs)
    return FullyConnected(matrix[:inputs], matrix[inputs] if use_bias else None)


def _read_layer(stream: _Stream) -> Layer:
    tag = stream.tag(
        (
            "con_4", "con_5", "con_6", "affine_", "affine_2", "relu_", "relu_2",
            "max_pool_2", "avg_pool_2", "add_prev_", "fc_2", "fc_3",
        ),
        "layer type",
    )  # fmt: skip
    if tag.startswith("con_"):
        return _read_conv(stream, tag)
    if tag.startswith("affine_"):
        return _read_affine(stream, tag)
    if tag.startswith("relu_"):
        return Relu(stream.boolean("relu disabled flag") if tag == "relu_2" else False)
    if tag.endswith("pool_2"):
        return _read_pool(stream, tag)
    if tag == "add_prev_":
        return AddPrev()
    return _read_fc(stream, tag)


def _read_trailing_state(stream: _Stream, tensors: int) -> None:
    # Training state after each layer: setup/stale/disabled flags and scratch tensors.
    for name in ("setup", "stale-gradient", "disabled-output"):
        stream.boolean(f"layer {name} flag")
    for _ in range(tensors):
        stream.empty_tensor("layer scratch")


def read_bytes(path: Path) -> bytes:
    """The bytes of a dlib network file, or one clear FaceReconError."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FaceReconError(f"dlib network file {path} does not exist") from None
    except OSError as error:
        raise FaceReconError(f"cannot read dlib network file {path}: {error.strerror}") from None


def read_dlib_net(path: str | Path) -> DlibNet:
    """Read and check a dlib ``loss_metric`` network file; raise FaceReconError otherwise."""
    path = Path(path)
    data = read_bytes(path)
    stream = _Stream(data, path)

    stream.expect(1, "loss wrapper version")
    loss_tag = stream.tag(("loss_metric_", "loss_metric_2"), "loss type")
    if loss_tag == "loss_metric_2":
        loss = LossMetric(stream.real("loss margin"), stream.real("loss distance threshold"))
    else:
        loss = LossMetric(0.1, 0.75)  # dlib's defaults for the first version

    # Wrapper versions run outside-in until the input record's type string, whose length
    # integer is the first value that is not a version (1..3).
    wrappers: list[int] = []
    while True:
        start = stream.pos
        value = stream.integer("wrapper version")
        if value not in (1, 2, 3):
            stream.pos = start
            break
        wrappers.append(value)
    if not wrappers or wrappers[-1] not in (2, 3):
        raise stream.fail("expected a layer wrapper (version 2 or 3) directly above the input")
    if 3 in wrappers[:-1]:
        raise stream.fail("wrapper version 3 appears above the bottom layer")

    stream.tag(("input_rgb_image_sized",), "input type")
    mean = tuple(stream.real("input channel mean") for _ in range(3))
    rows, cols = stream.count("input rows", 1), stream.count("input cols", 1)
    net_input = InputRGB((mean[0], mean[1], mean[2]), rows, cols)

    layers: list[Layer] = []
    bottom = wrappers[-1]
    layers.append(_read_layer(stream))
    _read_trailing_state(stream, 3)  # x_grad, cached output, grad_final
    if bottom == 3:
        stream.count("sample expansion factor")
    for version in reversed(wrappers[:-1]):
        if version == 2:
            layers.append(_read_layer(stream))
            _read_trailing_state(stream, 3)  # x_grad, cached output, params_grad

    if stream.pos != len(data):
        raise stream.fail(f"{len(data) - stream.pos} unexpected trailing bytes")
    return DlibNet(loss, net_input, tuple(wrappers), tuple(layers))
