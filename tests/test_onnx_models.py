"""The ``onnx`` model family and the built-in ``mobilefacenet``, against onnxruntime."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from facerecon.core.errors import FaceReconError  # noqa: E402
from facerecon.core.registry import registry  # noqa: E402
from facerecon.faces import photos  # noqa: E402
from facerecon.ops.forward import forward_for  # noqa: E402

RNG = np.random.default_rng(5)


def _face_net(path: Path, size: int = 64, layout: str = "nchw", dim: int = 24) -> Path:
    """A small ONNX 'recognizer': conv, batch norm, PReLU, a residual add, pool, Gemm."""

    def w(name: str, *shape: int):
        return numpy_helper.from_array(RNG.normal(size=shape).astype(np.float32) * 0.3, name)

    conv1, conv2, fc = w("conv1", 8, 3, 3, 3), w("conv2", 8, 8, 3, 3), w("fc", dim, 8)
    inits = [
        conv1, conv2, fc,
        numpy_helper.from_array(np.abs(RNG.normal(size=8)).astype(np.float32) + 0.5, "s"),
        numpy_helper.from_array(RNG.normal(size=8).astype(np.float32), "b"),
        numpy_helper.from_array(RNG.normal(size=8).astype(np.float32), "m"),
        numpy_helper.from_array(np.abs(RNG.normal(size=8)).astype(np.float32) + 0.5, "v"),
        numpy_helper.from_array(np.full((8, 1, 1), 0.25, np.float32), "slope"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["image", conv1.name], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["n1"]),
        helper.make_node("PRelu", ["n1", "slope"], ["p1"]),
        helper.make_node("Conv", ["p1", conv2.name], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "p1"], ["r"]),
        helper.make_node("Relu", ["r"], ["p2"]),
        helper.make_node("GlobalAveragePool", ["p2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", fc.name], ["features"], transB=1),
    ]
    shape = [1, 3, size, size] if layout == "nchw" else [1, size, size, 3]
    graph = helper.make_graph(
        nodes, "face", [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, dim])], inits,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _model(name: str, **params):
    reg = registry()
    cls = reg.get("model", name)
    return cls(cls.Params(**params))


def _reference(path: Path, chips: np.ndarray, mean, std, bgr: bool = False) -> np.ndarray:
    x = chips[..., ::-1] if bgr else chips
    x = ((x * 255 - np.asarray(mean)) / np.asarray(std)).transpose(0, 3, 1, 2).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate(
        [session.run(None, {session.get_inputs()[0].name: row[None]})[0] for row in x]
    )


def test_any_onnx_recognizer_matches_onnxruntime_with_its_preprocessing(tmp_path: Path):
    path = _face_net(tmp_path / "face.onnx")
    model = _model("onnx", path=str(path), channels="bgr", mean=[100.0, 110.0, 120.0], std=60.0)
    assert (model.input_size, model.embedding_size) == (64, 24)
    chips = RNG.random((3, 64, 64, 3)).astype(np.float32)
    got = model.network()(chips).numpy()
    want = _reference(path, chips, [100.0, 110.0, 120.0], 60.0, bgr=True)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_its_activations_are_tap_layers_read_in_one_pass(tmp_path: Path):
    path = _face_net(tmp_path / "face.onnx")
    model = _model("onnx", path=str(path))
    assert model.tap_layers() == ("t_p1", "t_p2")
    chips = RNG.random((2, 64, 64, 3)).astype(np.float32)
    embedding, taps = forward_for(model, ["t_p1"]).numpy(chips)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # onnxruntime reads an intermediate tensor once it is a graph output
    m = onnx.load(str(path))
    m.graph.output.append(helper.make_tensor_value_info("p1", TensorProto.FLOAT, None))
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = ((chips * 255 - 127.5) / 127.5).transpose(0, 3, 1, 2).astype(np.float32)
    for i in range(2):
        features, p1 = session.run(None, {"image": x[i : i + 1]})
        np.testing.assert_allclose(embedding[i], features[0], atol=1e-4)
        np.testing.assert_allclose(taps["t_p1"][i], p1[0], atol=1e-4)


def test_bad_files_and_layouts_are_one_line(tmp_path: Path):
    not_onnx = tmp_path / "photo.onnx"
    not_onnx.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(FaceReconError, match="is not an ONNX model"):
        _model("onnx", path=str(not_onnx))
    nhwc = _face_net(tmp_path / "nhwc.onnx", layout="nhwc")
    with pytest.raises(FaceReconError, match="take NCHW images with 3 channels"):
        _model("onnx", path=str(nhwc))
    good = _face_net(tmp_path / "face.onnx")
    with pytest.raises(
        FaceReconError, match="input_size 112 does not match the graph's input 64x64"
    ):
        _model("onnx", path=str(good), input_size=112)
    with pytest.raises(FaceReconError, match="the graph has no tensor 'logits'"):
        _model("onnx", path=str(good), output="logits")
    with pytest.raises(FaceReconError, match="does not match the sha256 its params give"):
        _model("onnx", path=str(good), sha256="0" * 64)
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    assert _model("onnx", path=str(good), sha256=digest).embedding_size == 24
    with pytest.raises(ValueError, match="Field required"):
        _model("onnx")


def test_mean_and_std_take_one_value_or_three():
    cls = registry().get("model", "onnx")
    with pytest.raises(ValueError, match="give one value or three"):
        cls.Params(path="x.onnx", mean=[1.0, 2.0])


def test_mobilefacenet_matches_onnxruntime_on_an_aligned_face():
    model = _model("mobilefacenet")
    assert (model.input_size, model.embedding_size) == (112, 512)
    assert hashlib.sha256(model.model_path().read_bytes()).hexdigest().startswith("87aacdfe")
    chips = np.stack([c.image for c in model.align(photos.read_image("builtin:astronaut"))])
    assert chips.shape == (1, 112, 112, 3)
    got = model.network()(chips).numpy()
    want = _reference(model.model_path(), chips, 127.0, 128.0)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_mobilefacenet_tells_the_same_person_from_another():
    model = _model("mobilefacenet")

    def embed(name: str) -> np.ndarray:
        chip = model.align(photos.read_image(name))[0].image
        e = model.network()(chip[None]).numpy()[0]
        return e / np.linalg.norm(e)

    obama, obama2, biden = (
        embed("builtin:obama/1"),
        embed("builtin:obama/2"),
        embed("builtin:biden"),
    )
    assert obama @ obama2 > obama @ biden + 0.2
