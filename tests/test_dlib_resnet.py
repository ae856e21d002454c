"""The dlib-resnet model plugin: file reader, Keras rebuild (parity with dlib), cache, alignment."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from facerecon.core.errors import FaceReconError
from facerecon_plugins.models.dlib_resnet import DlibResnet, network, register_models
from facerecon_plugins.models.dlib_resnet import model as dlib_model
from facerecon_plugins.models.dlib_resnet.align import to_rgb_uint8
from facerecon_plugins.models.dlib_resnet.reader import read_dlib_net

dlib = pytest.importorskip("dlib")

TAP_SHAPES = {
    "conv1": (72, 72, 32),
    "pool1": (35, 35, 32),
    **{f"stage1_block{b}": (35, 35, 32) for b in (1, 2, 3)},
    "stage1": (35, 35, 32),
    **{f"stage2_block{b}": (17, 17, 64) for b in (1, 2, 3, 4)},
    "stage2": (17, 17, 64),
    **{f"stage3_block{b}": (8, 8, 128) for b in (1, 2, 3)},
    "stage3": (8, 8, 128),
    **{f"stage4_block{b}": (4, 4, 256) for b in (1, 2, 3)},
    "stage4": (4, 4, 256),
    "stage5_block1": (2, 2, 256),
    "stage5": (2, 2, 256),
    "pool_global": (256,),
}


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory):
    """A private cache for the module, so no test reads or writes the user's cache."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACERECON_CACHE_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def face_model(cache_root: Path) -> DlibResnet:
    return DlibResnet()


@pytest.fixture(scope="module")
def net(face_model: DlibResnet):
    return face_model.network()


@pytest.fixture(scope="module")
def weights_file(face_model: DlibResnet) -> Path:
    return face_model.weights_path()


@pytest.fixture(scope="module")
def dlib_encoder(weights_file: Path):
    return dlib.face_recognition_model_v1(str(weights_file))


def _photo(name: str) -> np.ndarray:
    """Real face photos bundled with scikit-image and matplotlib, as RGB floats in [0, 1]."""
    import skimage.data
    import skimage.transform

    if name == "astronaut":
        return skimage.data.astronaut() / 255.0
    if name == "grace_hopper":
        import matplotlib.cbook
        from PIL import Image

        with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as image:
            return np.asarray(image.convert("RGB")) / 255.0
    # LFW subset faces are 25x25 gray; six-fold upscaling lets dlib's detector find them.
    index = int(name.removeprefix("lfw"))
    return skimage.transform.resize(skimage.data.lfw_subset()[index], (150, 150), order=3)


# --- parity with dlib ----------------------------------------------------------------------


@pytest.mark.parametrize("face", ["astronaut", "grace_hopper", "lfw0", "lfw14", "lfw49"])
def test_matches_dlib_descriptor(face: str, face_model: DlibResnet, net, dlib_encoder) -> None:
    chips = face_model.align(_photo(face))
    assert chips, f"dlib found no face in {face}"
    chip = chips[0].image
    chip_uint8 = np.round(chip * 255).astype(np.uint8)
    expected = np.array(dlib_encoder.compute_face_descriptor(chip_uint8))
    got = net(chip[None], training=False).numpy()[0]
    # 1e-5 would catch dividing by 255 instead of 256 (4e-4); real misreads are >= 4e-2.
    assert np.abs(got - expected).max() < 1e-5


def test_batch_matches_single_images(face_model: DlibResnet, net) -> None:
    chips = np.stack([face_model.align(_photo(f))[0].image for f in ("astronaut", "lfw0")])
    batch = net(chips, training=False).numpy()
    singles = np.concatenate([net(c[None], training=False).numpy() for c in chips])
    np.testing.assert_allclose(batch, singles, atol=1e-6)


# --- reader strictness ---------------------------------------------------------------------


def _raises_one_line(path: Path, *fragments: str) -> str:
    with pytest.raises(FaceReconError) as caught:
        read_dlib_net(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message
    return message


def test_reads_the_shipped_file(weights_file: Path) -> None:
    parsed = read_dlib_net(weights_file)
    assert len(parsed.layers) == 108 and len(parsed.wrappers) == 130
    assert parsed.input.rows == parsed.input.cols == 150
    assert parsed.input.mean == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert parsed.loss.distance_threshold == pytest.approx(0.6)


def test_truncated_file(weights_file: Path, tmp_path: Path) -> None:
    data = weights_file.read_bytes()
    for cut in (3, 5000, len(data) // 2, len(data) - 1):
        broken = tmp_path / f"cut{cut}.dat"
        broken.write_bytes(data[:cut])
        _raises_one_line(broken, "file ends in the middle of", "at byte")


def test_flipped_type_tag(weights_file: Path, tmp_path: Path) -> None:
    data = weights_file.read_bytes()
    at = data.index(b"affine_")
    broken = tmp_path / "tag.dat"
    broken.write_bytes(data[:at] + b"affime_" + data[at + 7 :])
    _raises_one_line(broken, "layer type is 'affime_'", f"at byte {at - 2}")


def test_trailing_bytes(weights_file: Path, tmp_path: Path) -> None:
    broken = tmp_path / "trailing.dat"
    broken.write_bytes(weights_file.read_bytes() + b"\x01\x00")
    _raises_one_line(broken, "2 unexpected trailing bytes")


@pytest.mark.parametrize(
    "content",
    [b"\x89PNG\r\n\x1a\n" + bytes(64), b"hello, world\n", b"", b"\x01\x01\x01\x04abcd"],
    ids=["png", "text", "empty", "wrong-loss"],
)
def test_not_a_dlib_file(content: bytes, tmp_path: Path) -> None:
    other = tmp_path / "other.dat"
    other.write_bytes(content)
    _raises_one_line(other, "is not a dlib face-recognition network file")


@pytest.mark.parametrize(
    "other", ["mmod_human_face_detector.dat", "shape_predictor_5_face_landmarks.dat"]
)
def test_other_dlib_model_files(other: str, cache_root: Path) -> None:
    path = dlib_model.packaged_model_file(other)
    _raises_one_line(path, "is not a dlib face-recognition network file", "at byte 2")
    with pytest.raises(FaceReconError, match="loss type"):
        DlibResnet(DlibResnet.Params(weights=str(path))).network()


def test_missing_file_through_the_model(tmp_path: Path) -> None:
    missing = tmp_path / "nope.dat"
    with pytest.raises(FaceReconError, match="does not exist"):
        DlibResnet(DlibResnet.Params(weights=str(missing))).network()


def test_other_architecture_is_refused(weights_file: Path) -> None:
    parsed = read_dlib_net(weights_file)
    short = dataclasses.replace(parsed, layers=parsed.layers[:-1])
    with pytest.raises(FaceReconError, match="layer record 107 is missing, expected embedding"):
        network.convert(short, "x.dat")
    swapped = list(parsed.layers)
    swapped[4], swapped[5] = swapped[5], swapped[4]
    with pytest.raises(FaceReconError, match="layer record 4 is Affine, expected enabled"):
        network.convert(dataclasses.replace(parsed, layers=tuple(swapped)), "x.dat")
    nesting = dataclasses.replace(parsed, wrappers=(1, *parsed.wrappers[1:]))
    with pytest.raises(FaceReconError, match="tag/layer nesting"):
        network.convert(nesting, "x.dat")


# --- weight cache --------------------------------------------------------------------------


def _fail_convert(*args: object) -> None:
    raise AssertionError("the cache should have been used")


def test_cache_is_used_then_rebuilt_when_tampered(
    weights_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path))
    fresh = dlib_model.load_weights(weights_file)
    (cached,) = (tmp_path / "dlib-resnet").glob("*.npz")

    with monkeypatch.context() as patch:
        # conversion fails if called: the cache is used (its speed is a benchmark's business)
        patch.setattr(network, "convert", _fail_convert)
        again = dlib_model.load_weights(weights_file)
    assert again.keys() == fresh.keys()
    for name in fresh:
        np.testing.assert_array_equal(again[name], fresh[name])

    # Same metadata, one weight changed: the content digest no longer matches.
    with np.load(cached) as stored:
        arrays = dict(stored)
    arrays["conv1/bias"] = arrays["conv1/bias"] + 1
    np.savez(cached, **arrays)
    rebuilt = dlib_model.load_weights(weights_file)
    np.testing.assert_array_equal(rebuilt["conv1/bias"], fresh["conv1/bias"])
    with np.load(cached) as stored:
        np.testing.assert_array_equal(stored["conv1/bias"], fresh["conv1/bias"])

    cached.write_bytes(b"not a zip file")
    rebuilt = dlib_model.load_weights(weights_file)
    np.testing.assert_array_equal(rebuilt["embedding/kernel"], fresh["embedding/kernel"])


def test_cache_of_another_source_is_not_trusted(
    weights_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path))
    dlib_model.load_weights(weights_file)
    (cached,) = (tmp_path / "dlib-resnet").glob("*.npz")
    # A cache whose metadata describes another file (here: a size off by one) is rebuilt.
    source = dlib_model._fingerprint(weights_file)
    with np.load(cached) as stored:
        arrays = {k: v for k, v in stored.items() if k != dlib_model._META_KEY}
    dlib_model._write_cache(cached, {**source, "size": source["size"] + 1}, arrays)
    assert dlib_model._read_cache(cached, source) is None
    calls = []
    real_convert = network.convert
    monkeypatch.setattr(network, "convert", lambda *a: calls.append(1) or real_convert(*a))
    dlib_model.load_weights(weights_file)
    assert calls == [1]
    assert dlib_model._read_cache(cached, source) is not None


# --- network shape and gradients -----------------------------------------------------------


def test_network_contract(face_model: DlibResnet, net) -> None:
    assert face_model.network() is net
    assert tuple(net.input.shape) == (None, 150, 150, 3)
    assert tuple(net.output.shape) == (None, 128)
    assert not net.trainable_weights  # frozen: only the images are optimized
    assert list(face_model.tap_layers()) == list(TAP_SHAPES)
    for name, shape in TAP_SHAPES.items():
        assert tuple(net.get_layer(name).output.shape) == (None, *shape), name


def test_taps_read_in_one_pass(face_model: DlibResnet, net) -> None:
    import keras

    taps = list(face_model.tap_layers())
    multi = keras.Model(net.input, [net.output] + [net.get_layer(n).output for n in taps])
    x = np.random.default_rng(0).random((2, 150, 150, 3), dtype=np.float32)
    outputs = multi(x, training=False)
    np.testing.assert_allclose(outputs[0].numpy(), net(x, training=False).numpy(), atol=1e-6)
    for name, value in zip(taps, outputs[1:], strict=True):
        assert tuple(value.shape) == (2, *TAP_SHAPES[name])
        assert float(value.numpy().min()) >= 0.0, f"{name} should follow a ReLU"


def test_last_input_rows_and_cols_get_no_gradient(net) -> None:
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(1).random((1, 150, 150, 3), dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.square(net(x, training=False)))
    grad = np.abs(tape.gradient(loss, x).numpy()[0])
    # The 7x7/2 conv never reads row/col 149 and the 3x3/2 max pool drops conv row 71.
    assert grad[147:].max() == 0.0 and grad[:, 147:].max() == 0.0
    assert grad[146].max() > 0.0 and grad[:, 146].max() > 0.0


# --- alignment -----------------------------------------------------------------------------


def test_align_astronaut(face_model: DlibResnet) -> None:
    photo = _photo("astronaut")
    chips = face_model.align(photo)
    assert len(chips) == 1
    chip = chips[0]
    assert chip.image.shape == (150, 150, 3) and chip.image.dtype == np.float32
    assert chip.image.min() >= 0.0 and chip.image.max() <= 1.0
    left, top, right, bottom = chip.box
    assert 0 <= left < right <= 512 and 0 <= top < bottom <= 512

    # In gray, dlib also scores a patch of the suit just above 0 (a larger box, so first).
    gray = face_model.align(photo.mean(axis=2))
    assert chip.box in [c.box for c in gray]
    assert all(c.image.shape == (150, 150, 3) for c in gray)
    rgba = np.concatenate([photo, np.ones((512, 512, 1))], axis=2)
    np.testing.assert_array_equal(face_model.align(rgba)[0].image, chip.image)


def test_align_without_face(face_model: DlibResnet) -> None:
    import skimage.data

    assert face_model.align(np.zeros((200, 200, 3))) == []
    assert face_model.align(skimage.data.coffee() / 255.0) == []


def test_to_rgb_uint8_rejects_odd_shapes() -> None:
    with pytest.raises(FaceReconError, match="photo"):
        to_rgb_uint8(np.zeros((4, 4, 2)))
    assert to_rgb_uint8(np.ones((2, 2))).tolist() == [[[255] * 3] * 2] * 2


# --- plugin wiring -------------------------------------------------------------------------


def test_registration_and_params(tmp_path: Path) -> None:
    registered: list[type] = []
    register_models(registered.append)
    assert registered == [DlibResnet]
    assert DlibResnet.name == "dlib-resnet"
    assert (DlibResnet.input_size, DlibResnet.embedding_size) == (150, 128)
    assert DlibResnet.Params().weights is None
    custom = DlibResnet(DlibResnet.Params(weights=str(tmp_path / "w.dat")))
    assert custom.weights_path() == tmp_path / "w.dat"
    with pytest.raises(ValueError):
        DlibResnet.Params(weigths="typo")
