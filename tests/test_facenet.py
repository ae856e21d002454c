"""The facenet plugin, offline: weight loading against keras-facenet under Keras 2, the
download/verification path, layer taps and MTCNN alignment."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import skimage.data
import skimage.transform

from facerecon import FaceReconError
from facerecon_plugins.models import facenet
from facerecon_plugins.models.facenet import FaceNet

KEY = "20180402-114759"

# keras-facenet's own builder under tf_keras (Keras 2, the format its weight files were saved
# in), random weights from a fixed seed, saved with save_weights. Kept in a child process:
# TF_USE_LEGACY_KERAS must be set before `tensorflow.keras` is first resolved.
KERAS2_REFERENCE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tf_keras
    from keras_facenet.inception_resnet_v1 import InceptionResNetV1

    weights, images, out, offset, scale = sys.argv[1:]
    model = InceptionResNetV1(input_shape=(160, 160, 3), classes=512)
    assert type(model).__module__.startswith("tf_keras"), type(model)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        values = []
        for w in layer.weights:
            name, shape = w.name.split("/")[-1].split(":")[0], tuple(w.shape)
            if name == "kernel":
                value = rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape)
            elif name == "moving_variance":
                value = rng.uniform(0.5, 1.5, shape)
            else:
                value = rng.normal(0, 0.1, shape)
            values.append(value.astype("float32"))
        layer.set_weights(values)
    model.save_weights(weights)
    trunk = tf_keras.Model(model.input, model.get_layer("Bottleneck_BatchNorm").output)
    x = (np.load(images) * 255 - float(offset)) / float(scale)
    np.save(out, trunk(x, training=False).numpy())
    """
)


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(weights file, images, Keras 2 pre-normalization embeddings)."""
    folder = tmp_path_factory.mktemp("facenet")
    face = skimage.transform.resize(skimage.data.astronaut()[40:200, 160:300], (160, 160))
    noise = np.random.default_rng(1).uniform(size=(2, 160, 160, 3))
    images = np.concatenate([face[None], noise]).astype(np.float32)
    np.save(folder / "images.npy", images)
    paths = [folder / "random-weights.h5", folder / "images.npy", folder / "reference.npy"]
    script = folder / "reference.py"
    script.write_text(KERAS2_REFERENCE)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = [*map(str, paths), str(facenet.STD_OFFSET), str(facenet.STD_SCALE)]
    done = subprocess.run(
        [sys.executable, str(script), *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return paths[0], images, np.load(paths[2])


@pytest.fixture(scope="module")
def network(reference):
    return FaceNet(FaceNet.Params(weights=str(reference[0]))).network()


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    """An empty keras-facenet cache and no weights from the environment."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(facenet.WEIGHTS_ENV, raising=False)
    return tmp_path / ".keras-facenet" / KEY / f"{KEY}-weights.h5"


def test_keras2_weights_give_the_same_embeddings(reference, network):
    _, images, expected = reference
    got = network(images, training=False).numpy()
    assert got.shape == (3, 512)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)


def test_shapes_taps_and_gradient(network):
    import keras
    import tensorflow as tf

    model = FaceNet()
    assert network.input_shape == (None, model.input_size, model.input_size, 3)
    assert network.output_shape == (None, model.embedding_size)
    taps = model.tap_layers()
    assert 15 <= len(taps) <= 30
    reader = keras.Model(network.input, [network.get_layer(n).output for n in taps])
    assert reader.output_shape[-1] == (None, 1792)  # AvgPool
    x = tf.Variable(tf.fill((1, 160, 160, 3), 0.5))
    with tf.GradientTape() as tape:
        y = network(x, training=True)  # frozen: batch norm must still use its moving stats
    assert np.abs(tape.gradient(y, x).numpy()).sum() > 0
    np.testing.assert_allclose(y.numpy(), network(x, training=False).numpy(), rtol=1e-5)


def test_missing_weights_fail_fast_and_say_what_to_get(offline_home, monkeypatch):
    # A server that accepts connections and never answers: the worst case of a dead network.
    silent = socket.create_server(("127.0.0.1", 0))
    from keras_facenet.metadata import MODEL_METADATA

    meta = MODEL_METADATA[KEY]
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/{KEY}-weights.h5"
    monkeypatch.setitem(meta, "keras_weights_url", url)
    monkeypatch.setattr(facenet, "DOWNLOAD_TIMEOUT", 1.0)
    start = time.monotonic()
    try:
        with pytest.raises(FaceReconError) as caught:
            FaceNet().network()
    finally:
        silent.close()
    assert time.monotonic() - start < 15
    message = str(caught.value)
    assert "\n" not in message
    for part in (f"{KEY}-weights.h5", meta["keras_weights_sha256"], url, facenet.WEIGHTS_ENV):
        assert part in message
    assert socket.getdefaulttimeout() is None  # restored


def test_unreachable_host_fails_with_the_real_url(offline_home, monkeypatch):
    def no_network(url, filename):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlretrieve", no_network)
    with pytest.raises(FaceReconError, match="releases/download/v0.3.1/20180402-114759"):
        facenet.weights_path(KEY)


def test_cache_is_sha256_checked(offline_home, monkeypatch, reference):
    """A cached file with the wrong hash is fetched again and rejected if still wrong; one with
    the right hash is used without touching the network."""
    offline_home.parent.mkdir(parents=True)
    offline_home.write_bytes(b"not the weights")
    fetched = []

    def corrupt_download(url, filename):
        fetched.append(url)
        with open(filename, "wb") as f:
            f.write(b"truncated")

    monkeypatch.setattr(urllib.request, "urlretrieve", corrupt_download)
    with pytest.raises(FaceReconError, match="sha256 mismatch"):
        facenet.weights_path(KEY)
    assert fetched

    from keras_facenet.metadata import MODEL_METADATA

    offline_home.write_bytes(reference[0].read_bytes())
    monkeypatch.setitem(MODEL_METADATA[KEY], "keras_weights_sha256", _sha256(offline_home))
    fetched.clear()
    assert facenet.weights_path(KEY) == str(offline_home)
    assert not fetched


def test_local_file_is_used_as_given(offline_home, monkeypatch, reference, caplog):
    path = str(reference[0])
    with caplog.at_level(logging.WARNING):
        assert facenet.weights_path(KEY, path) == path
    assert "using it as given" in caplog.text
    monkeypatch.setenv(facenet.WEIGHTS_ENV, path)
    assert facenet.weights_path(KEY) == path
    with pytest.raises(FaceReconError, match=f"not found: download {KEY}-weights.h5"):
        facenet.weights_path(KEY, str(offline_home))


def test_a_file_that_does_not_fit_is_rejected(reference, tmp_path):
    import keras

    wrong = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, use_bias=False, name="Conv2d_1a_3x3")]
    )
    with pytest.raises(FaceReconError, match="does not fit"):
        facenet.load_h5_weights(wrong, str(reference[0]))
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"junk")
    with pytest.raises(FaceReconError, match="does not fit"):
        facenet.load_h5_weights(wrong, str(junk))


def test_align_finds_the_astronaut():
    photo = skimage.data.astronaut().astype(np.float32) / 255
    chips = FaceNet().align(photo)
    assert len(chips) == 1
    chip = chips[0]
    assert chip.image.shape == (160, 160, 3) and chip.image.dtype == np.float32
    assert chip.image.min() >= 0 and chip.image.max() <= 1
    left, top, right, bottom = chip.box
    assert 150 < left < 190 and 30 < top < 70 and 260 < right < 300 and 160 < bottom < 200
    gray = FaceNet().align(photo.mean(axis=-1))
    assert len(gray) == 1 and gray[0].image.shape == (160, 160, 3)
    rgba = np.concatenate([photo, np.ones_like(photo[..., :1])], axis=-1)
    assert FaceNet().align(rgba)[0].box == chip.box


def test_align_finds_nothing_in_black():
    assert FaceNet().align(np.zeros((200, 200, 3))) == []
    with pytest.raises(FaceReconError):
        FaceNet().align(np.zeros((4, 200, 200, 3)))
