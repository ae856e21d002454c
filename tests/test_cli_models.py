"""Models named from the command line (``--model``, ``--model-param``) and ``api.model``,
checked against onnxruntime and ONNX's own shape inference."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import skimage.io
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from facerecon import api  # noqa: E402
from facerecon.cli import main  # noqa: E402
from facerecon.core.errors import FaceReconError  # noqa: E402

from .test_onnx_models import _face_net, _reference  # noqa: E402

#: what the onnx model says of a key it does not take, wherever the key comes from
BAD_KEY = (
    "model.pth: unknown key 'pth'; allowed: channels, input_size, mean, name, output, path, "
    "sha256, std, template (did you mean 'path'?)"
)


def _crop(path: Path, size: int = 64, seed: int = 0) -> np.ndarray:
    """A tight 'face crop' PNG of the model's size; its pixels in [0, 1]."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    skimage.io.imsave(path, pixels, check_contrast=False)
    return pixels.astype(np.float32) / 255


def _errors(result) -> list[str]:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_embed_names_an_onnx_model_and_its_params(tmp_path: Path):
    net = _face_net(tmp_path / "face.onnx")
    chip = _crop(tmp_path / "crop.png")
    out = tmp_path / "e.npy"
    result = CliRunner().invoke(
        main,
        ["embed", str(tmp_path / "crop.png"), "--model", "onnx", "--model-param", f"path={net}",
         "--model-param", "channels=bgr", "--model-param", "mean=[100, 110.5, 120]",
         "--model-param", "std=60", "--no-align", "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    want = _reference(net, chip[None], [100.0, 110.5, 120.0], 60.0, bgr=True)[0]
    got = np.load(out)
    assert got.shape == (24,)
    np.testing.assert_allclose(got, want, atol=1e-4)
    norm = re.search(r"24-d embedding, norm ([0-9.]+)", result.output)
    assert norm and float(norm[1]) == pytest.approx(np.linalg.norm(want), abs=2e-4)


def test_a_key_the_model_does_not_take_is_one_line_with_close_matches(tmp_path: Path):
    net = _face_net(tmp_path / "face.onnx")
    _crop(tmp_path / "crop.png")
    out = tmp_path / "e.npy"
    runner = CliRunner()
    commands = [
        ["embed", str(tmp_path / "crop.png"), "--model", "onnx", "-o", str(out)],
        ["layers", "onnx"],
        ["layers", "--model", "onnx"],
        # the parameters are checked before the photos are looked for
        ["calibrate", "--model", "onnx", "--photos", str(tmp_path / "none")],
    ]
    for command in commands:
        result = runner.invoke(main, [*command, "--model-param", f"pth={net}"])
        # every problem at once, as for a spec: the misspelt key leaves `path` unset
        assert _errors(result) == ["error: model.path: Field required", f"error: {BAD_KEY}"]
        given = ["--model-param", f"path={net}", "--model-param", "inputsize=64"]
        assert _errors(runner.invoke(main, [*command, *given])) == [
            "error: model.inputsize: unknown key 'inputsize'; allowed: channels, input_size, "
            "mean, name, output, path, sha256, std, template (did you mean 'input_size'?)"
        ], command
    assert not out.exists()
    # a value the key does not take: the value, the choices and the closest
    result = runner.invoke(
        main, ["layers", "onnx", "--model-param", f"path={net}", "--model-param", "channels=rgbb"]
    )
    assert _errors(result) == [
        "error: model.channels: Input should be 'rgb' or 'bgr' (got 'rgbb') (did you mean 'rgb'?)"
    ]
    # a value YAML cannot read, a pair without `=`, a model named twice, a key twice
    bad = {
        ("--model-param", "mean=[1, 2"): "model.mean: not a usable YAML value '[1, 2': ",
        ("--model-param", "path"): "--model-param 'path': give KEY=VALUE",
        ("--model", "faceres"): "two models named, 'onnx' and --model 'faceres'; give one",
        ("--model-param", "path=a", "--model-param", "path=b"): "--model-param 'path': given twice",
    }
    for extra, start in bad.items():
        (line,) = _errors(runner.invoke(main, ["layers", "onnx", *extra]))
        assert line.startswith(f"error: {start}"), line
    (line,) = _errors(runner.invoke(main, ["calibrate"]))
    assert line == "error: name the model: MODEL, or --model NAME"


def test_layers_lists_the_onnx_taps_with_their_shapes(tmp_path: Path):
    net = _face_net(tmp_path / "face.onnx")
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(net)))
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in inferred.graph.value_info
    }
    # the activations p1 (PRelu) and p2 (Relu) as the graph has them (NCHW), batch axis off
    want = [("pixels", "64x64x3")] + [
        (f"t_{name}", "x".join(map(str, shapes[name][1:]))) for name in ("p1", "p2")
    ]
    for command in (["layers", "onnx"], ["layers", "--model", "onnx"]):
        result = CliRunner().invoke(main, [*command, "--model-param", f"path={net}"])
        assert result.exit_code == 0, result.output
        rows = [line.strip(" │┃").split() for line in result.output.splitlines()]
        found = [(r[0], r[-1]) for r in rows if len(r) >= 2 and r[0] in dict(want)]
        assert found == want


def test_api_model_returns_the_named_model_with_its_params(tmp_path: Path):
    net = _face_net(tmp_path / "face.onnx", size=48, dim=16)
    model = api.model("onnx", path=net, std=64)  # a pathlib.Path is taken as the file
    assert (model.name, model.input_size, model.embedding_size) == ("onnx", 48, 16)
    chips = np.random.default_rng(1).random((2, 48, 48, 3)).astype(np.float32)
    np.testing.assert_allclose(
        model.network()(chips).numpy(), _reference(net, chips, 127.5, 64.0), atol=1e-4
    )
    assert [name for name, _ in api.layers("onnx", path=str(net))] == ["pixels", "t_p1", "t_p2"]
    with pytest.raises(FaceReconError) as caught:
        api.model("onnx", pth=str(net))
    assert caught.value.lines == ["model.path: Field required", BAD_KEY]
    with pytest.raises(FaceReconError) as caught:
        api.model("onnx")
    assert caught.value.lines == ["model.path: Field required"]
    with pytest.raises(FaceReconError, match=r"^model.name: unknown model 'onnxx'; choose from "):
        api.model("onnxx")
