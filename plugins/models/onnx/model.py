"""The ``onnx`` model family: any ONNX face recognizer as a facerecon model, attacked or
judging, rebuilt as TensorFlow ops (:mod:`facerecon.graphs.onnx`) so gradients reach the
pixels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

import facerecon.core.kinds
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import FaceChip, FaceModel

if TYPE_CHECKING:
    import keras

    from facerecon.graphs.onnx import OnnxGraph

#: activations whose outputs are the default tap layers
TAP_OPS = ("Relu", "PRelu", "LeakyRelu")
# ArcFace's 112x112 five points (eye centres, nose tip, mouth corners), the usual template.
TEMPLATES = {"arcface": "ARCFACE_112"}


def _three(value: float | list[float]) -> list[float]:
    return [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]


class OnnxParams(facerecon.core.kinds.Params):
    path: str | None = Field(..., description="the .onnx file of the face recognizer")
    input_size: int | None = Field(
        None, ge=16, le=1024, description="the chip's side; default: the graph input's"
    )
    channels: Literal["rgb", "bgr"] = Field("rgb", description="the input's channel order")
    mean: float | list[float] = Field(
        127.5, description="subtracted from 0..255 values (one, or per channel in input order)"
    )
    std: float | list[float] = Field(
        127.5, description="then divided by (one, or per channel in input order)"
    )
    template: Literal["arcface"] = Field(
        "arcface", description="the five-point alignment template (ArcFace's, scaled)"
    )
    output: str | None = Field(None, description="the output tensor; default: the first")
    sha256: str | None = Field(None, description="the file's checksum, checked before reading")

    @field_validator("mean", "std")
    @classmethod
    def _per_channel(cls, value: float | list[float]) -> float | list[float]:
        if isinstance(value, list) and len(value) != 3:
            raise ValueError(f"give one value or three (one per channel), got {len(value)}")
        return value


class Onnx(FaceModel):
    """An ONNX face recognizer (``path``); see :class:`OnnxParams` for its preprocessing.

    Input: RGB [0, 1] chips aligned by five points to the template at ``input_size``; the
    graph sees ``(x * 255 - mean) / std`` in ``channels`` order, NCHW. Output: the
    ``output`` tensor flattened, before any normalization. Tap layers: the output of every
    ReLU / PReLU / LeakyReLU, named ``t_<tensor name>``.
    """

    name = "onnx"
    Params = OnnxParams
    input_size = None  # type: ignore[assignment]  # per instance: the graph's
    embedding_size = None  # type: ignore[assignment]

    def __init__(self, params: OnnxParams | None = None) -> None:
        super().__init__(params)
        self._graph: OnnxGraph | None = None
        self._network: keras.Model | None = None
        self._load()

    def model_path(self) -> Path:
        """The .onnx file (for the built-ins: fetched on first use)."""
        return Path(self.params.path).expanduser()

    def _load(self) -> None:
        from facerecon.graphs.onnx import load_onnx

        path = self.model_path()
        if self.params.sha256 is not None:
            from facerecon.core.packages import sha256

            if sha256(path) != self.params.sha256:
                raise FaceReconError(f"{path} does not match the sha256 its params give")
        output = [self.params.output] if self.params.output else None
        graph = load_onnx(path, output)
        if len(graph.parameters) != 1:
            raise FaceReconError(
                f"{path}: a face recognizer has one input; this graph has "
                f"{len(graph.parameters)} ({', '.join(graph.parameters)})"
            )
        self._graph = graph
        self.output = self.params.output or graph.outputs_[0]
        size = self._input_shape(graph, path)
        self.input_size = size
        (embedding,) = self._probe(graph, size)
        self.embedding_size = int(np.prod(embedding.shape[1:]))

    def _input_shape(self, graph: OnnxGraph, path: Path) -> int:
        """The chip side, from the params or the graph; refused unless NCHW with 3 channels."""
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        (info,) = [i for i in model.graph.input if i.name == graph.parameters[0]]
        dims = [d.dim_value or None for d in info.type.tensor_type.shape.dim]
        if len(dims) != 4 or dims[1] not in (3, None):
            raise FaceReconError(
                f"{path}: input {info.name!r} has shape {dims}; facerecon's onnx models take "
                "NCHW images with 3 channels"
            )
        # exports for one image often write the batch of 1 into their reshapes
        self._one_image = dims[0] == 1
        height, width = dims[2], dims[3]
        size = self.params.input_size or height or width
        if size is None:
            raise FaceReconError(f"{path}: the input's size is not in the graph; give input_size")
        for dim in (height, width):
            if dim is not None and dim != size:
                raise FaceReconError(
                    f"{path}: input_size {size} does not match the graph's input {height}x{width}"
                )
        return int(size)

    def _probe(self, graph: OnnxGraph, size: int) -> list[np.ndarray]:
        import tensorflow as tf

        zeros = tf.zeros((1, 3, size, size))
        return [
            np.asarray(v)
            for v in graph.run({graph.parameters[0]: zeros}, [graph.tensor(self.output)])
        ]

    def tap_layers(self) -> Sequence[str]:
        from .network import layer_name

        return tuple(layer_name(t) for t in self._taps())

    def _taps(self) -> list[str]:
        graph = self._graph
        needed = set(graph.order([graph.tensor(self.output)]))
        return [
            tensor
            for tensor, (node, _) in graph.producers.items()
            if node in needed and graph.nodes[node].op in TAP_OPS
        ]

    def network(self) -> keras.Model:
        if self._network is None:
            from . import network

            p = self.params
            bgr = p.channels == "bgr"
            self._network = network.build(
                self._graph, self.input_size, self.output, self._taps(), bgr,
                _three(p.mean), _three(p.std), self.name, self._one_image,
            )  # fmt: skip
        return self._network

    def _template(self) -> np.ndarray:
        from facerecon_plugins.models.faceres import align

        return getattr(align, TEMPLATES[self.params.template]) * (self.input_size / 112)

    def align(self, photo: np.ndarray) -> list[FaceChip]:
        from facerecon_plugins.models.faceres.align import align_photo

        return align_photo(photo, self._template(), self.input_size)

    def align_chip(self, chip: np.ndarray) -> np.ndarray:
        from facerecon_plugins.models.faceres.align import align_chip

        return align_chip(chip, self._template(), self.input_size)
