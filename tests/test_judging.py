"""Judges: scores against an independent numpy computation, where they land, bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import skimage.io
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from facerecon import Detection, Detector, FaceChip, api, hookimpl
from facerecon.cli import main
from facerecon.core.context import Judges, References
from facerecon.core.errors import FaceReconError
from facerecon.core.registry import plugin_manager, registry
from facerecon.engine.runner import instantiate
from facerecon.engine.validation import validate
from facerecon.faces import embedding
from facerecon.faces.photos import resize
from facerecon.judges import scoring as judging

from .tiny_model import TinyModel


class JudgeModel(TinyModel):
    """Another tiny network, with calibrated thresholds: a default judge."""

    name = "tiny-judge"
    thresholds = {"1e-2": 0.3, "1e-3": 0.9}
    default_judge = True

    def network(self) -> keras.Model:
        if not hasattr(self, "_net"):
            keras.utils.set_random_seed(1)
            x = inputs = keras.Input((32, 32, 3))
            # centred pixels through a random projection: different photos, different rows
            x = keras.layers.Rescaling(2.0, -1.0)(x)
            x = keras.layers.Conv2D(4, 4, strides=4)(x)
            x = keras.layers.Flatten()(x)
            self._net = keras.Model(inputs, keras.layers.Dense(8)(x), name="judge")
        return self._net

    def align_chip(self, chip: np.ndarray) -> np.ndarray:
        return resize(chip[4:-4, 4:-4], 32)  # a different crop than align's, on purpose


class FaceInTheMiddle(JudgeModel):
    """The judge's network behind a 'detector' that finds the face in the middle of a photo,
    and none in a black one: aligned chips differ from whole photos."""

    name = "tiny-middle"

    def align(self, photo: np.ndarray) -> list[FaceChip]:
        if photo.max() < 0.05:
            return []
        h, w = photo.shape[:2]
        box = (w // 4, h // 4, w - w // 4, h - h // 4)
        return [FaceChip(resize(photo[box[1] : box[3], box[0] : box[2]], 32), box)]


class Probe(TinyModel):
    """A judge whose embedding is four values of the chip (the first pixel's red, green
    and blue, the second pixel's red), so that every cosine can be worked out by hand."""

    name = "probe"
    thresholds = {"1e-2": 0.5, "1e-3": 0.7}

    def network(self) -> keras.Model:
        if not hasattr(self, "_net"):
            inputs = keras.Input((32, 32, 3))
            dense = keras.layers.Dense(4, use_bias=False)
            self._net = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
            kernel = np.zeros((32 * 32 * 3, 4), np.float32)
            kernel[np.arange(4), np.arange(4)] = 1.0
            dense.set_weights([kernel])
        return self._net

    def align(self, photo: np.ndarray) -> list[FaceChip]:
        return [FaceChip(photo.astype(np.float32), (0, 0, 32, 32))]


class Missing(TinyModel):
    name = "tiny-missing"
    thresholds = {"1e-2": 0.5}
    default_judge = True

    @classmethod
    def available(cls) -> str | None:
        return "its weights are not fetched (test)"


class Corners(Detector):
    """'Detects' a face when the top-left pixel is darker than the centre."""

    name = "corners"

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        found = image[0, 0].mean() < image[h // 2, w // 2].mean()
        return [Detection((0, 0, w, h), 0.75)] if found else []


class JudgePlugins:
    @hookimpl
    def register_models(self, register):
        register(JudgeModel)
        register(FaceInTheMiddle)
        register(Missing)

    @hookimpl
    def register_detectors(self, register):
        register(Corners)


@pytest.fixture
def judges():
    pm = plugin_manager()
    plugin = JudgePlugins()
    pm.register(plugin, name="tests.judges")
    yield
    pm.unregister(name="tests.judges")


def photo(path, seed):
    # coarse colour blocks: photos that even a tiny network tells apart
    rng = np.random.default_rng(seed)
    image = (np.kron(rng.random((4, 4, 3)), np.ones((10, 10, 1))) * 255).astype(np.uint8)
    skimage.io.imsave(path, image, check_contrast=False)
    return image.astype(np.float32) / 255


def spec(tmp_path, **judges):
    return {
        "name": "judged",
        "model": {"name": "tiny"},
        "targets": [
            {"image": "a.png", "same_person": ["b.png", "c.png"]},
            {"image": "c.png"},
        ],
        "solver": {"name": "adam", "steps": 3},
        "judges": judges or {"models": ["tiny-judge"], "detector": "corners"},
        "tracking": {"experiment": "judged"},
    }


def write(tmp_path, data):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def unit(rows):
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


#: the spec's targets: (its photo, other photos of the person)
PEOPLE = [("a", ["b", "c"]), ("c", [])]


def by_numpy(images, photos):
    """Per kept image (one per target of :func:`spec`), the judge's cosines computed here:
    its network on its own crop of the image and on the whole photos."""
    net = JudgeModel().network()
    out = []
    for image, (first, others) in zip(images, PEOPLE, strict=True):
        recon = unit(net(resize(image[4:-4, 4:-4], 32)[None]).numpy().astype(np.float64))[0]
        refs = unit(net(np.stack([resize(photos[n], 32) for n in [first, *others]])).numpy())
        cosines = refs.astype(np.float64) @ recon
        scored = {"type1": cosines[0]}
        if others:
            scored |= {"type2": cosines[1:], "type2_mean": np.mean(cosines[1:])}
        out.append(scored)
    return out


def darker_corner(image):
    h, w = image.shape[:2]
    return bool(image[0, 0].mean() < image[h // 2, w // 2].mean())


def test_a_cosine_exactly_at_a_threshold_passes_it():
    assert judging.passes(Probe(), 0.5) == {"pass_fmr1e-2": True, "pass_fmr1e-3": False}
    assert judging.passes(Probe(), 0.7) == {"pass_fmr1e-2": True, "pass_fmr1e-3": True}
    assert judging.passes(Probe(), 0.4999) == {"pass_fmr1e-2": False, "pass_fmr1e-3": False}


def test_embeddings_are_unit_rows_and_a_zero_embedding_stays_zero():
    rows = np.array([[3e-3, 4e-3], [0.0, 0.0], [30.0, -40.0]])
    np.testing.assert_allclose(
        embedding.unit(rows), [[0.6, 0.8], [0.0, 0.0], [0.6, -0.8]], rtol=1e-12
    )
    chips = np.random.default_rng(2).random((3, 32, 32, 3))
    net = JudgeModel().network()
    np.testing.assert_allclose(
        judging.embed(JudgeModel(), chips), unit(net(chips).numpy()), atol=1e-6
    )


def test_scores_of_hand_made_references_are_exact():
    # the probe's embedding of the first image is (1, 0, 0, 0): every cosine with it is the
    # first value of the other row, exact in binary
    first = np.zeros((32, 32, 3), np.float32)
    first[0, 0] = (0.75, 0, 0)
    first[16, 16] = 0.5  # a centre brighter than the corner: the detector finds a face
    second = np.zeros((32, 32, 3), np.float32)
    second[0, 0] = (0, 0.5, 0)
    refs = References(
        type1=np.array([0.5, 0.5, 0.5, 0.5], np.float32),
        type2=np.array([[0.625, 0.25, 0, 0], [0.875, 0, 0.25, 0]], np.float32),
        impostors=np.array(
            [[0.5, 0, 0, 0], [0.75, 0, 0, 0], [0.25, 0, 0, 0], [0.625, 0, 0, 0], [0.875, 0, 0, 0]],
            np.float32,
        ),
    )
    bare = References(type1=None, type2=np.zeros((0, 0), np.float32))
    probe = Probe()
    judges = Judges([probe], Corners(), references={"probe": [refs, bare]})
    scores = judging.score(judges, [first, second, first], [0, 1, 0])
    full = {
        "type1": 0.5,
        "type1_pass_fmr1e-2": True,
        "type1_pass_fmr1e-3": False,
        "type2": [0.625, 0.875],
        "type2_mean": 0.75,
        "type2_pass_fmr1e-2": True,
        "type2_pass_fmr1e-3": True,
        # impostors scoring at least as high: 0.5, 0.75, 0.625 and 0.875 for type I;
        # 0.75 and 0.875 for type II (ties count against the reconstruction)
        "impostor_max": 0.875,
        "type1_rank": 5,
        "type2_rank": 3,
    }
    assert scores == [
        {"probe": full, "corners": {"face": True, "score": 0.75}},
        {"probe": {}, "corners": {"face": False, "score": 0.0}},
        {"probe": full, "corners": {"face": True, "score": 0.75}},
    ]
    # without a detector, only the judges' entries
    judges.detector = None
    assert judging.score(judges, [second], [0]) == [
        {
            "probe": {
                "type1": 0.5,
                "type1_pass_fmr1e-2": True,
                "type1_pass_fmr1e-3": False,
                "type2": [0.25, 0.0],
                "type2_mean": 0.125,
                "type2_pass_fmr1e-2": False,
                "type2_pass_fmr1e-3": False,
                "impostor_max": 0.0,
                "type1_rank": 1,
                "type2_rank": 1,
            }
        }
    ]


def test_flat_scores_and_their_means_over_targets():
    scores = [
        {
            "j": {"type1": 0.5, "type1_pass_fmr1e-2": True, "type2": [0.1, 0.3], "type2_mean": 0.2},
            "det": {"face": True, "score": 0.75},
        },
        {"j": {"type1": 0.25, "type1_pass_fmr1e-2": False}, "det": {"face": False, "score": 0.0}},
    ]
    assert judging.flat(scores[0]) == {
        "judge/j/type1": 0.5,
        "judge/j/type1_pass_fmr1e-2": 1.0,
        "judge/j/type2_mean": 0.2,
        "judge/det/face": 1.0,
        "judge/det/score": 0.75,
    }
    assert judging.means(scores) == {
        "judge/j/type1": 0.375,
        "judge/j/type1_pass_fmr1e-2": 0.5,
        "judge/j/type2_mean": 0.2,  # only the first target has other photos
        "judge/det/face": 0.5,
        "judge/det/score": 0.375,
    }


def test_table_cells_columns_and_the_detectors_entry():
    entry = {
        "type1": 0.5,
        "type1_pass_fmr1e-2": False,
        "type1_pass_fmr1e-3": False,
        "type2_mean": 0.75,
        "type2_pass_fmr1e-2": True,
        "type2_pass_fmr1e-3": True,
    }
    assert judging.mark(entry, "type1") == "0.500"
    assert judging.mark(entry, "type2_mean") == "0.750 ✓✓"
    assert judging.mark(entry | {"type1_pass_fmr1e-2": True}, "type1") == "0.500 ✓"
    assert judging.mark({"type1": 0.25}, "type2_mean") == "-"
    detector = {"face": True, "score": 0.75}
    scores = [
        {"j": {"type1": 0.5}, "det": detector, "k": {"type1": 0.1}},
        {"j": {"type1": 0.4, "type2_mean": 0.3}, "det": {"face": False, "score": 0.0}},
    ]
    assert judging.detection(scores[0]) is detector
    assert judging.detection({"j": {"type1": 0.5}}) is None
    assert judging.columns(scores) == [
        ("j I", "j", "type1"),
        ("j II", "j", "type2_mean"),
        ("k I", "k", "type1"),
    ]


def test_an_impostor_at_exactly_the_same_photo_cosine_is_left_out(tmp_path, monkeypatch):
    own = np.array([1.0, 0, 0], np.float32)
    at = np.float32(judging.SAME_PHOTO)
    rows = np.array(
        [[at, np.sqrt(1 - at**2), 0], [np.nextafter(at, 0), 0, 0], [0, 1, 0]], np.float32
    )
    monkeypatch.setattr(judging, "collection_embeddings", lambda model, source, base: rows)
    data = {
        "name": "i",
        "model": {"name": "tiny"},
        "targets": [{"image": "builtin:astronaut"}],
        "judges": {"models": [], "impostors": "crowd"},
    }
    spec = validate(data, base_dir=tmp_path)
    kept = judging._impostors(Probe(), spec, own, np.zeros((0, 0), np.float32))
    np.testing.assert_array_equal(kept, rows[1:])
    kept = judging._impostors(Probe(), spec, None, rows[2:])  # type II photos count as own
    np.testing.assert_array_equal(kept, rows[:2])


def test_references_and_scores_match_numpy_without_a_solve(tmp_path, judges):
    photos = {name: photo(tmp_path / f"{name}.png", i) for i, name in enumerate("abc")}
    (tmp_path / "crowd").mkdir()
    for name in "ab":  # the people's own photos, in the crowd too
        shutil.copy(tmp_path / f"{name}.png", tmp_path / "crowd" / f"{name}.png")
    crowd = [photo(tmp_path / "crowd" / f"p{i}.png", 10 + i) for i in range(4)]
    np.save(tmp_path / "e.npy", np.ones((1, 16), np.float32))
    data = {
        "name": "r",
        "model": {"name": "tiny"},
        "targets": [
            {"image": "a.png", "same_person": ["b.png", "c.png"]},
            {"embedding": "e.npy", "photo": "c.png", "align": False},
            {"embedding": "e.npy", "same_person": ["a.png"]},
        ],
        "judges": {"models": ["tiny-middle"], "detector": "corners", "impostors": "crowd"},
    }
    # base_dir, not the working directory, is where the photos are
    spec = validate(data, base_dir=tmp_path)
    judges_ = judging.prepare(spec, registry(), instantiate)
    assert [m.name for m in judges_.models] == ["tiny-middle"]
    assert judges_.detector.name == "corners" and judges_.skipped == {}

    net = JudgeModel().network()

    def emb(chips):
        return unit(net(np.stack(chips)).numpy())

    def middle(image):  # FaceInTheMiddle's aligned chip of a 40x40 photo
        return resize(image[10:30, 10:30], 32)

    crowd_rows = emb([middle(photos["a"]), middle(photos["b"]), *map(middle, crowd)])
    expected = [
        (emb([middle(photos["a"])])[0], emb([middle(photos[n]) for n in "bc"]), crowd_rows[2:]),
        # align: false takes the photo as a face crop, as the judge takes a reconstruction
        (emb([resize(photos["c"][4:-4, 4:-4], 32)])[0], None, crowd_rows),
        (None, emb([middle(photos["a"])]), crowd_rows[1:]),
    ]
    refs = judges_.references["tiny-middle"]
    assert len(refs) == 3
    for got, (type1, type2, impostors) in zip(refs, expected, strict=True):
        if type1 is None:
            assert got.type1 is None
        else:
            np.testing.assert_allclose(got.type1, type1, atol=1e-5)
        if type2 is None:
            assert got.type2.shape == (0, 0) and got.type2.dtype == np.float32
        else:
            np.testing.assert_allclose(got.type2, type2, atol=1e-5)
        np.testing.assert_allclose(got.impostors, impostors, atol=1e-5)

    images = list(np.random.default_rng(4).random((4, 32, 32, 3)).astype(np.float32))
    images[3][0, 0] = 1.0  # a corner brighter than the centre: no face
    images[3][16, 16] = 0.0
    entries = [0, 1, 2, 0]
    pass_keys = [f"pass_fmr{rate}" for rate in JudgeModel.thresholds]
    scores = judging.score(judges_, images, entries)
    recon = emb([resize(image[4:-4, 4:-4], 32) for image in images])
    for image, entry, r, got in zip(images, entries, recon, scores, strict=True):
        type1, type2, impostors = expected[entry]
        judged = got["tiny-middle"]
        want = {}
        if type1 is not None:
            want["type1"] = float(type1 @ r)
        if type2 is not None:
            want["type2_mean"] = float(np.mean(type2 @ r))
            np.testing.assert_allclose(judged["type2"], type2 @ r, atol=1e-5)
        against = impostors @ r
        assert judged["impostor_max"] == pytest.approx(float(against.max()), abs=1e-5)
        for kind, value in want.items():
            assert judged[kind] == pytest.approx(value, abs=1e-5)
            prefix = kind.removesuffix("_mean")
            assert judged[f"{prefix}_rank"] == 1 + int(np.sum(against >= value))
            for rate, threshold in JudgeModel.thresholds.items():
                assert judged[f"{prefix}_pass_fmr{rate}"] is bool(value >= threshold)
        assert set(judged) == {
            "impostor_max",
            *want,
            *[f"{k.removesuffix('_mean')}_{s}" for k in want for s in ("rank", *pass_keys)],
            *(["type2"] if type2 is not None else []),
        }
        face = darker_corner(image)
        assert got["corners"] == {"face": face, "score": 0.75 if face else 0.0}
    assert not darker_corner(images[3])


def test_a_same_person_photo_without_a_face_is_named_with_its_judge(tmp_path, judges):
    for i, name in enumerate("ab"):
        photo(tmp_path / f"{name}.png", i)
    skimage.io.imsave(tmp_path / "c.png", np.zeros((40, 40, 3), np.uint8), check_contrast=False)
    data = {
        "name": "r",
        "model": {"name": "tiny"},
        "targets": [{"image": "a.png", "same_person": ["b.png", "c.png"]}],
        "judges": {"models": ["tiny-middle"], "detector": None},
    }
    with pytest.raises(FaceReconError) as info:
        judging.prepare(validate(data, base_dir=tmp_path), registry(), instantiate)
    assert str(info.value) == (
        "targets[0].same_person[1]: c.png: no face found by tiny-middle's detector; use a photo "
        "with a clear frontal face, or `align: false` if it is already a tight face crop "
        "(judge 'tiny-middle')"
    )
    np.save(tmp_path / "e.npy", np.ones((1, 16), np.float32))
    data["targets"] = [{"image": "a.png"}, {"embedding": "e.npy", "photo": "c.png"}]
    with pytest.raises(FaceReconError) as info:
        judging.prepare(validate(data, base_dir=tmp_path), registry(), instantiate)
    assert str(info.value).startswith("targets[1]: c.png: no face found by tiny-middle's")
    assert str(info.value).endswith("(judge 'tiny-middle')")
    data["targets"] = [{"image": "a.png"}]
    data["judges"]["impostors"] = "crowd"
    (tmp_path / "crowd").mkdir()
    shutil.copy(tmp_path / "c.png", tmp_path / "crowd" / "c.png")
    with pytest.raises(FaceReconError) as info:
        judging.prepare(validate(data, base_dir=tmp_path), registry(), instantiate)
    assert str(info.value) == (
        "judges.impostors: crowd: no face found by tiny-middle in any of its images"
    )


def test_scores_match_numpy_and_land_in_mlflow(tmp_path, store, judges, monkeypatch):
    # thresholds between this fixture's cosines, a margin of 0.05 away from each: target 0
    # passes at both rates on type II but at neither on type I; target 1 passes one rate
    thresholds = {"1e-2": -0.25, "1e-3": 0.1}
    monkeypatch.setattr(JudgeModel, "thresholds", thresholds)
    photos = {name: photo(tmp_path / f"{name}.png", i) for i, name in enumerate("abc")}
    result = CliRunner().invoke(
        main, ["run", write(tmp_path, spec(tmp_path))], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "tiny-judge I" in result.output and "tiny-judge II" in result.output

    client = MlflowClient(store)
    (exp,) = [e for e in client.search_experiments() if e.name == "judged"]
    (run,) = client.search_runs([exp.experiment_id])
    table = json.loads(
        Path(client.download_artifacts(run.info.run_id, "candidates.json")).read_text()
    )
    rows = dict(zip(table["columns"], zip(*table["data"], strict=True), strict=True))
    kept = [i for i, k in enumerate(rows["kept"]) if k]
    scores = [json.loads(rows["judges"][i]) for i in kept]

    # independently: the judge's network on its own chips of the photos and of the kept images
    client.download_artifacts(run.info.run_id, "kept", str(tmp_path))
    images = [
        skimage.io.imread(tmp_path / "kept" / f"target_{t}.png")[:, :, :3] / 255.0
        for t in range(len(PEOPLE))
    ]
    expected = by_numpy(images, photos)
    flags = []
    for t, (image, want) in enumerate(zip(images, expected, strict=True)):
        judged = scores[t]["tiny-judge"]
        # the kept PNG is 8-bit, so allow its rounding
        assert judged["type1"] == pytest.approx(want["type1"], abs=0.01)
        for kind in ("type1", "type2"):
            if kind == "type2" and "type2_mean" not in want:
                continue
            value = want["type1" if kind == "type1" else "type2_mean"]
            for rate, threshold in thresholds.items():
                assert abs(value - threshold) > 0.05  # far from the rounding
                assert judged[f"{kind}_pass_fmr{rate}"] is bool(value >= threshold)
                flags.append((t, kind, rate, judged[f"{kind}_pass_fmr{rate}"]))
        if "type2" in want:
            np.testing.assert_allclose(judged["type2"], want["type2"], atol=0.01)
            assert judged["type2_mean"] == pytest.approx(want["type2_mean"], abs=0.01)
            assert judged["type2_mean"] == pytest.approx(np.mean(judged["type2"]))
        else:
            assert "type2" not in judged and "type2_mean" not in judged
        assert scores[t]["corners"] == {
            "face": darker_corner(image),
            "score": 0.75 if darker_corner(image) else 0.0,
        }
    # the fixture has flags of both values, and type I and II disagree on target 0
    assert {f[-1] for f in flags} == {True, False}
    assert [f[-1] for f in flags if f[:2] == (0, "type1")] == [False, False]
    assert [f[-1] for f in flags if f[:2] == (0, "type2")] == [True, True]
    metrics = run.data.metrics
    assert metrics["judge/tiny-judge/type1"] == pytest.approx(
        np.mean([w["type1"] for w in expected]), abs=0.01
    )
    assert metrics["judge/tiny-judge/type1/t1"] == pytest.approx(expected[1]["type1"], abs=0.01)
    assert metrics["judge/tiny-judge/type2_mean/t0"] == pytest.approx(
        expected[0]["type2_mean"], abs=0.01
    )
    for kind, rate in [("type1", "1e-2"), ("type1", "1e-3"), ("type2", "1e-3")]:
        passed = [f[-1] for f in flags if f[1:3] == (kind, rate)]
        assert metrics[f"judge/tiny-judge/{kind}_pass_fmr{rate}"] == np.mean(passed)
    assert "tiny-missing" not in json.dumps(scores)


def test_the_default_judges_are_the_available_calibrated_models(judges):
    from facerecon.core.registry import registry
    from facerecon.engine.validation import validate
    from facerecon.judges.scoring import judge_names

    reg = registry()
    chosen, skipped = judge_names(
        validate(
            {"name": "d", "model": {"name": "tiny"}, "targets": [{"image": "builtin:astronaut"}]}
        ),
        reg,
    )
    calibrated = [
        n
        for n in reg.names("model")
        if reg.get("model", n).thresholds and reg.get("model", n).default_judge
    ]
    assert "tiny-judge" in chosen and "tiny" not in chosen
    assert skipped == {"tiny-missing": "its weights are not fetched (test)"}
    assert sorted([*chosen, *skipped]) == sorted(calibrated)
    # a judge is never the optimized model itself
    chosen, _ = judge_names(
        validate(
            {
                "name": "d",
                "model": {"name": "tiny-judge"},
                "targets": [{"image": "builtin:astronaut"}],
            }
        ),
        reg,
    )
    assert "tiny-judge" not in chosen


class _Registry:
    """A registry of a few models only: the default judges are the calibrated ones here."""

    models = {m.name: m for m in (TinyModel, JudgeModel, Missing)}

    def names(self, kind):
        return sorted(self.models) if kind == "model" else []

    def get(self, kind, name):
        return self.models[name]


def test_default_judges_are_built_with_their_references_and_the_unavailable_named(tmp_path):
    photos = {name: photo(tmp_path / f"{name}.png", i) for i, name in enumerate("ab")}
    data = {
        "name": "d",
        "model": {"name": "tiny"},
        "targets": [{"image": "a.png", "same_person": ["b.png"]}],
        "judges": {"detector": None},
    }
    built = judging.prepare(validate(data, base_dir=tmp_path), _Registry(), instantiate)
    # tiny is the optimized model, tiny-missing is calibrated but not available
    assert [m.name for m in built.models] == ["tiny-judge"] and built.detector is None
    assert built.skipped == {"tiny-missing": "its weights are not fetched (test)"}
    net = JudgeModel().network()
    (refs,) = built.references["tiny-judge"]
    want = unit(net(np.stack([resize(photos[n], 32) for n in "ab"])).numpy())
    np.testing.assert_allclose(refs.type1, want[0], atol=1e-5)
    np.testing.assert_allclose(refs.type2, want[1:], atol=1e-5)
    assert refs.impostors is None


def test_a_detectors_entry_gets_no_judge_column_even_beside_a_cosine():
    # a name that detects in one reconstruction's scores is a detector in all of them
    scores = [
        {"j": {"type1": 0.5}, "d": {"face": True, "score": 0.75, "type1": 0.25}},
        {"j": {"type2_mean": 0.3}, "d": {"type2_mean": 0.5}},
    ]
    assert judging.columns(scores) == [("j I", "j", "type1"), ("j II", "j", "type2_mean")]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"models": ["tiny-judg"]}, "judges.models[0]: unknown model 'tiny-judg'"),
        ({"models": ["tiny-missing"]}, "judge 'tiny-missing' is not available: its weights"),
        ({"detector": "corner"}, "judges.detector: unknown detector 'corner'"),
    ],
)
def test_bad_judges_are_one_line_and_leave_no_run(tmp_path, store, judges, section, message):
    for i, name in enumerate("abc"):
        photo(tmp_path / f"{name}.png", i)
    result = CliRunner().invoke(main, ["run", write(tmp_path, spec(tmp_path, **section))])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    client = MlflowClient(store)
    assert not [
        r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
    ]


def test_a_same_person_photo_without_a_face_stops_before_solving(tmp_path, store, judges):
    class NoFace(JudgeModel):
        name = "tiny-judge"

        def align(self, photo):
            return [] if photo.shape[0] == 41 else super().align(photo)

    for i, name in enumerate("ab"):
        photo(tmp_path / f"{name}.png", i)
    skimage.io.imsave(tmp_path / "c.png", np.zeros((41, 41, 3), np.uint8), check_contrast=False)
    pm = plugin_manager()
    pm.unregister(name="tests.judges")

    class Plugins:
        @hookimpl
        def register_models(self, register):
            register(NoFace)

        @hookimpl
        def register_detectors(self, register):
            register(Corners)

    pm.register(Plugins(), name="tests.judges")
    result = CliRunner().invoke(main, ["run", write(tmp_path, spec(tmp_path))])
    assert result.exit_code != 0
    assert "targets[0].same_person[1]" in result.output and "no face" in result.output
    assert "tiny-judge" in result.output


def test_impostor_rank_counts_other_peoples_photos_scoring_as_high(tmp_path, store, judges):
    photos = {name: photo(tmp_path / f"{name}.png", i) for i, name in enumerate("abc")}
    crowd = tmp_path / "crowd"
    crowd.mkdir()
    others = [photo(crowd / f"p{i}.png", 10 + i) for i in range(6)]
    skimage.io.imsave(crowd / "a.png", (photos["a"] * 255).round().astype(np.uint8))
    data = spec(tmp_path, models=["tiny-judge"], detector=None, impostors="crowd")
    data["targets"] = data["targets"][:1]
    data["tracking"] = {"enabled": False}
    result = api.run(validate(data, base_dir=tmp_path))
    judged = result.judges[0]["tiny-judge"]

    net = JudgeModel().network()
    recon = unit(net(resize(result.images[result.best[0]][4:-4, 4:-4], 32)[None]).numpy())[0]
    # the target's own photo in the crowd is left out: only the six others are impostors
    impostors = unit(net(np.stack([resize(o, 32) for o in others])).numpy()) @ recon
    assert judged["impostor_max"] == pytest.approx(float(impostors.max()), abs=1e-5)
    assert judged["type1_rank"] == 1 + int(np.sum(impostors >= judged["type1"]))
    assert judged["type2_rank"] == 1 + int(np.sum(impostors >= judged["type2_mean"]))


def test_a_collections_mean_face_is_cached_and_matches_numpy(tmp_path, monkeypatch):
    from facerecon.faces import photos as faces

    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path / "cache"))
    model = TinyModel()
    expected = np.mean(
        [resize(faces.as_rgb(im), 32) for im in faces.read_images("builtin:lfw")[:100]], axis=0
    )
    first = faces.mean_chip(model, "builtin:lfw", False)
    np.testing.assert_allclose(first, expected, atol=1e-5)
    (cached,) = (tmp_path / "cache" / "means").iterdir()
    np.save(cached, np.zeros_like(first))  # the second call reads the cache, not the photos
    assert np.all(faces.mean_chip(model, "builtin:lfw", False) == 0)


def test_sweep_summary_carries_each_variants_judge_means(tmp_path, store, judges):
    photos = {name: photo(tmp_path / f"{name}.png", i) for i, name in enumerate("abc")}
    data = spec(tmp_path, models=["tiny-judge"], detector=None)
    data["sweep"] = {"variants": [{"name": "slow", "set": {"solver.lr": 0.001}}, {"name": "fast"}]}
    data["sweep"]["variants"][1]["set"] = {"solver.lr": 0.05}
    ctx = api.sweep(validate(data, base_dir=tmp_path))
    client = MlflowClient(store)
    parent = ctx.run_id
    table = json.loads(Path(client.download_artifacts(parent, "summary.json")).read_text())
    rows = dict(zip(table["columns"], zip(*table["data"], strict=True), strict=True))
    assert list(rows["variant"]) == ["slow", "fast"]
    expected = []
    for outcome in ctx.outcomes:
        # each variant's means over targets, from its own kept images
        want = by_numpy(outcome.images, photos)
        expected.append(
            {
                "judge/tiny-judge/type1": np.mean([w["type1"] for w in want]),
                "judge/tiny-judge/type2_mean": want[0]["type2_mean"],
            }
        )
    # the variants' means differ, so a mean from the wrong variant cannot pass
    assert abs(expected[0]["judge/tiny-judge/type1"] - expected[1]["judge/tiny-judge/type1"]) > 0.1
    for i, (outcome, want) in enumerate(zip(ctx.outcomes, expected, strict=True)):
        child = client.get_run(outcome.run_id)
        for key, value in want.items():
            assert rows[key][i] == pytest.approx(value, abs=1e-5)
            assert outcome.judges[key] == pytest.approx(value, abs=1e-5)
            assert child.data.metrics[key] == pytest.approx(value, abs=1e-5)


def test_report_shows_the_judges_per_run_and_per_target(tmp_path, store, judges):
    photos = {name: photo(tmp_path / f"{name}.png", i) for i, name in enumerate("abc")}
    result = api.run(validate(spec(tmp_path), base_dir=tmp_path))
    images = [result.images[i] for i in result.best]
    expected = by_numpy(images, photos)
    faces = [darker_corner(image) for image in images]
    assert faces == [False, True]  # a face rate of one half, not trivially 0 or 1
    api.report("judged", tmp_path / "out", log=False)
    with open(tmp_path / "out" / "table.csv") as f:
        (row,) = list(csv.DictReader(f))
    mean = np.mean([w["type1"] for w in expected])
    assert float(row["judge/tiny-judge/type1"]) == pytest.approx(mean, abs=1e-4)
    assert float(row["judge/tiny-judge/type2_mean"]) == pytest.approx(
        expected[0]["type2_mean"], abs=1e-4
    )
    assert float(row["judge/corners/face"]) == np.mean(faces)
    with open(tmp_path / "out" / "targets.csv") as f:
        targets = list(csv.DictReader(f))
    assert [t["target"] for t in targets] == ["0", "1"]
    for t, want, face in zip(targets, expected, faces, strict=True):
        assert float(t["tiny-judge I"]) == pytest.approx(want["type1"], abs=1e-3)
        assert t["corners face"] == str(face)
        assert float(t["distance"]) == pytest.approx(
            result.terms["distance"][result.best[int(t["target"])]], abs=1e-4
        )
    assert float(targets[0]["tiny-judge II"]) == pytest.approx(expected[0]["type2_mean"], abs=1e-3)
    assert targets[1]["tiny-judge II"] == ""
