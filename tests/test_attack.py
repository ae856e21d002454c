"""The attack evaluation protocol end to end on a small labelled folder the tests make from
built-in photos (Obama three times, eight other people once, one unreadable file), with the
tiny model attacked and a second tiny network as the transfer judge. The numbers are
checked against a direct count over embeddings computed here with plain Keras and numpy."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
import skimage.io
from click.testing import CliRunner
from mlflow import MlflowClient

from facerecon import api, hookimpl
from facerecon.cli import main
from facerecon.core.errors import FaceReconError
from facerecon.core.registry import plugin_manager
from facerecon.engine.executors import local
from facerecon.engine.validation import validate
from facerecon.evaluation import attack
from facerecon.faces import datasets
from facerecon.faces import photos as faces

from .conftest import CalibratedTiny
from .tiny_model import TinyModel

PEOPLE = {
    "obama": ["builtin:obama/1", "builtin:obama/2", "builtin:obama/3"],
    "biden": ["builtin:biden"],
    "hanks": ["builtin:tom-hanks"],
    "eileen": ["builtin:astronaut"],
    "grace": ["builtin:grace-hopper"],
    **{f"r{i}": [f"builtin:radar/{i}"] for i in range(4)},
}
SPEC = {
    "name": "attack",
    "model": {"name": "tiny"},
    "targets": [{"image": "builtin:astronaut"}],  # replaced by each person's photo
    "solver": {"name": "adam", "steps": 3, "lr": 0.05},
    "judges": {"models": ["tiny", "tiny-judge"], "detector": None},
    "tracking": {"experiment": "attack", "image_every": 10},
}


class TinyJudge(TinyModel):
    """Another tiny network (other weights): a judge that is not the attacked model."""

    name = "tiny-judge"

    def network(self) -> keras.Model:
        if not hasattr(self, "_net"):
            keras.utils.set_random_seed(7)
            x = inputs = keras.Input((32, 32, 3))
            x = keras.layers.Conv2D(8, 5, strides=2, activation="relu")(x)
            x = keras.layers.GlobalAveragePooling2D()(x)
            x = keras.layers.Dense(16, name="embedding")(x)
            self._net = keras.Model(inputs, x, name="tiny_judge")
        return self._net


class _Judge:
    @hookimpl
    def register_models(self, register):
        register(TinyJudge)


@pytest.fixture(autouse=True)
def judge_model():
    pm = plugin_manager()
    plugin = _Judge()
    pm.register(plugin, name="tests.tiny-judge")
    yield
    pm.unregister(plugin)


def _write(root, people: dict[str, list[str]]) -> None:
    for name, sources in people.items():
        (root / name).mkdir(parents=True)
        for k, source in enumerate(sources, 1):
            image = (faces.read_image(source) * 255).astype(np.uint8)
            skimage.io.imsave(root / name / f"{name}_{k:04d}.png", image)


@pytest.fixture
def collection(tmp_path):
    root = tmp_path / "people"
    _write(root, PEOPLE)
    (root / "broken").mkdir()
    (root / "broken" / "broken_0001.png").write_text("not an image")
    return root


def _embed(model: TinyModel, image: np.ndarray) -> np.ndarray:
    """The model's unit embedding of an image, by plain Keras (not facerecon's forward)."""
    chip = faces.resize(image, 32)[None].astype(np.float32)
    row = np.asarray(model.network()(chip))[0].astype(np.float64)
    return row / np.linalg.norm(row)


def test_lfw_pairs_are_read_with_their_header_and_bad_lines_named(tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("10 300\nobama 1 3\nobama 2 biden 1\n")
    matched, mismatched = attack.read_pairs(pairs, tmp_path)
    assert matched == [(tmp_path / "obama/obama_0001.jpg", tmp_path / "obama/obama_0003.jpg")]
    assert mismatched == [(tmp_path / "obama/obama_0002.jpg", tmp_path / "biden/biden_0001.jpg")]
    pairs.write_text("obama 1\n")
    with pytest.raises(FaceReconError, match=r"pairs.txt:1: 'obama 1': a pair is"):
        attack.read_pairs(pairs, tmp_path)


def test_thresholds_and_success_rates_are_a_direct_count():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((40, 8))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    names = [f"p{i // 2}" for i in range(40)]  # 20 people, two photos each
    model = TinyModel(TinyModel.Params())
    judged = attack.judge_thresholds(model, attack.Embedded(rows, [], names))
    impostor = [
        rows[i] @ rows[j] for i in range(40) for j in range(i + 1, 40) if names[i] != names[j]
    ]
    assert len(judged.impostor) == len(impostor) == 760
    ranked = sorted(impostor, reverse=True)
    # 1e-2 of 760 pairs: 7 may pass, so t sits just above the 8th highest impostor score
    assert judged.thresholds["1e-2"] == pytest.approx(ranked[7], abs=1e-12)
    assert np.sum(judged.impostor >= judged.thresholds["1e-2"]) == 7
    assert set(judged.thresholds) == {"1e-2"}  # 1e-3 would rest on fewer than 10 pairs
    t = judged.thresholds["1e-2"]
    cosines = [0.1, 0.5, ranked[7] - 1e-9, ranked[6], 0.99, t]  # t itself reaches t
    assert attack.sar(cosines, judged.thresholds) == {"1e-2": 3 / 6}


def test_lfw_pairs_skip_blank_lines_and_take_a_header_only_on_the_first_line(tmp_path):
    pairs = tmp_path / "pairs.txt"
    photo = lambda name, n: tmp_path / name / f"{name}_{n:04d}.jpg"  # noqa: E731
    pairs.write_text("obama 1 12\n\n   \nbiden 02 obama 3\n")
    assert attack.read_pairs(pairs, tmp_path) == (
        [(photo("obama", 1), photo("obama", 12))],
        [(photo("biden", 2), photo("obama", 3))],
    )
    pairs.write_text("300\n1 2 3\n7 1 8 2\n")  # numbers as names after the header
    assert attack.read_pairs(pairs, tmp_path) == (
        [(photo("1", 2), photo("1", 3))],
        [(photo("7", 1), photo("8", 2))],
    )
    pairs.write_text("obama 1 2\n\n  a 1 b 2 c  \n")
    with pytest.raises(FaceReconError) as caught:
        attack.read_pairs(pairs, tmp_path)
    assert str(caught.value) == (
        f"{pairs}:3: 'a 1 b 2 c': a pair is 'name i j' or 'name1 i name2 j'"
    )


def test_people_with_several_photos_come_first_then_by_name_up_to_the_limit(tmp_path):
    def photo(name: str, n: int) -> datasets.LabelledPhoto:
        return datasets.LabelledPhoto(tmp_path / f"{name}_{n}.png", name)

    photos = [photo("d", 2), photo("a", 1), photo("c", 3), photo("b", 2), photo("d", 1)]
    photos += [photo("c", 1), photo("b", 1), photo("c", 2), photo("e", 1), photo("e", 2)]
    skipped = {tmp_path / "e_1.png": "unreadable", tmp_path / "f_1.png": "unreadable"}
    people = attack.select(photos, skipped, None)
    # b and d have two photos, c three, a one; e has one usable photo left
    assert [(p.name, [q.name for q in p.photos]) for p in people] == [
        ("b", ["b_1.png", "b_2.png"]),
        ("c", ["c_1.png", "c_2.png", "c_3.png"]),
        ("d", ["d_1.png", "d_2.png"]),
        ("a", ["a_1.png"]),
        ("e", ["e_2.png"]),
    ]
    assert [p.name for p in attack.select(photos, skipped, 4)] == ["b", "c", "d", "a"]
    assert attack.select(photos, skipped, 0) == []
    collection = attack.Collection("x", people[3:])
    assert collection.type2 is False and collection.skipped == {} and collection.pairs is None
    assert attack.Collection("x", people[2:]).type2 is True  # d's two photos


def _calibrated(name: str, thresholds: dict[str, float]) -> attack.Calibrated:
    # dyadic values, so that a cosine equal to a threshold is exactly equal
    genuine = np.array([0.875, 0.5, 0.25, 0.75, 0.625])
    impostor = np.array([0.125, 0.5, 0.25, 0.375, 0.0, -0.25])
    return attack.Calibrated(name, thresholds, impostor, genuine)


def _share(values: list[float], t: float) -> float:
    return sum(1 for v in values if v >= t) / len(values) if values else math.nan


def _same(row: dict, expected: dict) -> None:
    assert row.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(row[key]), key
        else:
            assert row[key] == pytest.approx(value, abs=1e-12), key


def _unit_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, 8))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _threshold(impostor: list[float], rate: float) -> float:
    """Just above the impostor score that ``rate`` of the pairs may reach, counted by hand."""
    ranked = sorted(impostor, reverse=True)
    return float(np.nextafter(ranked[math.floor(rate * len(ranked))], np.inf))


def test_calibration_splits_a_collections_pairs_into_genuine_and_impostor_ones():
    names = ["a", "b", "a", "c", "b", "a", "d", "e", "c"]
    # a's photos close together, the others' far apart: genuine pairs on both sides
    spread = np.array([0.1 if n == "a" else 3.0 for n in names])[:, None]
    centres = dict(zip("abcde", _unit_rows(5, 1), strict=True))
    rows = np.stack([centres[n] for n in names]) + spread * _unit_rows(9, 4)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    judged = attack.judge_thresholds(
        TinyModel(TinyModel.Params()), attack.Embedded(rows, [], names)
    )
    pairs = [(i, j) for i in range(9) for j in range(i + 1, 9)]
    genuine = [rows[i] @ rows[j] for i, j in pairs if names[i] == names[j]]
    impostor = [rows[i] @ rows[j] for i, j in pairs if names[i] != names[j]]
    assert len(genuine) == 5 and len(impostor) == 31
    np.testing.assert_allclose(np.sort(judged.genuine), np.sort(genuine), atol=1e-12)
    np.testing.assert_allclose(np.sort(judged.impostor), np.sort(impostor), atol=1e-12)
    assert judged.thresholds == {"1e-2": pytest.approx(_threshold(impostor, 1e-2), abs=1e-12)}
    assert judged.name == "tiny" and judged.source == "collection"
    tar = sum(g >= judged.thresholds["1e-2"] for g in genuine) / len(genuine)
    assert 0 < tar < 1 and judged.tar() == {"1e-2": pytest.approx(tar)}


@pytest.mark.parametrize(("people", "rates"), [(141, {"1e-2"}), (142, {"1e-2", "1e-3"})])
def test_a_rate_is_reported_once_ten_impostor_pairs_may_pass_its_threshold(people, rates):
    rows = _unit_rows(people, 2)
    names = [f"p{i}" for i in range(people)]
    judged = attack.judge_thresholds(
        TinyModel(TinyModel.Params()), attack.Embedded(rows, [], names)
    )
    impostor = (rows @ rows.T)[np.triu_indices(people, 1)].tolist()
    # 141 people: 9870 pairs, 9 may pass at 1e-3; 142 people: 10011 pairs, 10 may
    assert len(judged.impostor) == len(impostor) == people * (people - 1) // 2
    assert set(judged.thresholds) == rates
    for rate, t in judged.thresholds.items():
        assert t == pytest.approx(_threshold(impostor, float(rate)), abs=1e-12)
        assert np.sum(np.array(impostor) >= t) == math.floor(float(rate) * len(impostor))


def test_a_pairs_file_gives_the_genuine_and_impostor_pairs_of_the_photos_found(tmp_path):
    rows = _unit_rows(6, 3).astype(np.float32)
    paths = [tmp_path / f"{k}.png" for k in range(6)]
    embedded = attack.Embedded(rows, paths, list("aabbcc"))
    lost = tmp_path / "lost.png"  # a photo the model found no face in
    matched = [(paths[0], paths[1]), (paths[5], paths[4]), (paths[2], lost)]
    mismatched = [
        (paths[0], paths[2]),
        (lost, paths[3]),
        (paths[4], paths[1]),
        (paths[3], paths[5]),
    ]
    model = TinyModel(TinyModel.Params())
    judged = attack.judge_thresholds(model, embedded, (matched, mismatched))
    cos = rows.astype(np.float64) @ rows.T.astype(np.float64)
    np.testing.assert_allclose(judged.genuine, [cos[0, 1], cos[5, 4]], atol=1e-6)
    np.testing.assert_allclose(judged.impostor, [cos[0, 2], cos[4, 1], cos[3, 5]], atol=1e-6)
    assert judged.genuine.dtype == judged.impostor.dtype == np.float64
    top = max(cos[0, 2], cos[4, 1], cos[3, 5])  # 1e-2 of three pairs: none may pass
    assert judged.thresholds == {"1e-2": pytest.approx(float(top), abs=1e-6)}
    assert judged.thresholds["1e-2"] > judged.impostor.max() and judged.source == "collection"
    # no mismatched pair among the photos found: the model's own thresholds, if it has them
    lone = attack.judge_thresholds(CalibratedTiny(), embedded, (matched, [(lost, paths[0])]))
    assert lone.thresholds == {"1e-2": 0.99, "1e-3": 0.995} and lone.source == "thresholds.json"
    assert lone.name == "tiny-calibrated" and lone.impostor.shape == (0,)
    np.testing.assert_allclose(lone.genuine, [cos[0, 1], cos[5, 4]], atol=1e-6)
    lone.thresholds["1e-2"] = 0.5  # a copy: the model's class attribute is left alone
    assert CalibratedTiny.thresholds["1e-2"] == 0.99
    none = attack.judge_thresholds(CalibratedTiny(), embedded, ([], []))
    assert none.genuine.shape == none.impostor.shape == (0,)
    with pytest.raises(FaceReconError) as caught:
        attack.judge_thresholds(model, embedded, (matched, []))
    assert str(caught.value) == (
        "judge 'tiny': the collection gives no impostor pairs (photos of two or more people) "
        "to set its thresholds, and the model has no calibrated ones"
    )


class DarkBlindTiny(TinyModel):
    """The tiny network with a detector that finds no face in a dark photo."""

    name = "tiny-dark"

    def align(self, photo: np.ndarray) -> list:
        return [] if photo.mean() < 0.05 else super().align(photo)


def test_a_collection_is_embedded_once_and_its_unusable_photos_say_why(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "the people"  # a space: the reason is what follows the path's ": "
    rng = np.random.default_rng(5)
    # small noise photos: the tiny network needs no face, and they are quick to read
    for name in ("obama/obama_0001", "obama/obama_0002", "biden/biden_0001"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        skimage.io.imsave(root / f"{name}.png", rng.integers(0, 256, (40, 40, 3), np.uint8))
    dark = root / "dark" / "dark_0001.png"
    dark.parent.mkdir()
    skimage.io.imsave(dark, np.zeros((40, 40, 3), np.uint8))
    broken, odd, long, plain, chosen = (
        root / f"{n}.png" for n in ("broken", "odd", "long", "plain", "chosen")
    )
    broken.write_text("not an image")
    skimage.io.imsave(chosen, np.full((40, 40, 3), 128, np.uint8))
    original = faces.read_photo

    def read_photo(path):
        if path == odd:
            raise FaceReconError(f"{path}: odd: first line\nsecond line")
        if path == long:
            raise FaceReconError(f"{path}: " + "x" * 200)
        if path == plain:
            raise FaceReconError("a reader's message without the path")
        return original(path)

    monkeypatch.setattr(faces, "read_photo", read_photo)
    listed = [
        ("obama", root / "obama" / "obama_0001.png"),
        ("dark", dark),
        ("broken", broken),
        ("biden", root / "biden" / "biden_0001.png"),
        ("odd", odd),
        ("chosen", chosen),
        ("long", long),
        ("plain", plain),
        ("obama", root / "obama" / "obama_0002.png"),
    ]
    photos = [datasets.LabelledPhoto(path, name) for name, path in listed]
    model = DarkBlindTiny(DarkBlindTiny.Params())
    skipped = {chosen: "left out"}
    embedded = attack.embed_collection(model, photos, skipped)
    found = [listed[k] for k in (0, 3, 8)]
    assert embedded.paths == [p for _, p in found]
    assert embedded.identities == ["obama", "biden", "obama"]
    expected = np.stack([_embed(model, original(p)) for _, p in found])
    np.testing.assert_allclose(embedded.rows, expected, atol=1e-5)
    assert embedded.rows.dtype == np.float32
    (kept,) = (tmp_path / "cache" / "embeddings").iterdir()
    assert kept.name.startswith("tiny-dark-") and kept.suffix == ".npy"
    np.testing.assert_array_equal(embedded.of([found[2][1], found[0][1]]), embedded.rows[[2, 0]])
    unreadable = str(pytest.raises(FaceReconError, original, broken).value)
    assert skipped == {
        chosen: "left out",
        dark: "no face found by tiny-dark",
        broken: unreadable.removeprefix(f"{broken}: ")[:120],
        odd: "odd: first line",
        long: "x" * 120,
        plain: "a reader's message without the path",
    }
    assert skipped[broken].startswith("not a readable image (")
    # the second time the embeddings come from the cache, until a photo file changes
    monkeypatch.setattr(attack.calibration, "embed_photos", None)
    again = attack.embed_collection(model, photos, {chosen: "left out"})
    assert again.paths == embedded.paths
    np.testing.assert_array_equal(again.rows, embedded.rows)
    skimage.io.imsave(dark, np.full((40, 40, 3), 200, np.uint8))
    with pytest.raises(TypeError):
        attack.embed_collection(model, photos, {chosen: "left out"})


def test_success_rates_count_each_type_at_or_above_every_threshold_of_each_judge():
    judges = [
        _calibrated("tiny", {"1e-2": 0.5, "1e-3": 0.75}),
        _calibrated("other", {"1e-2": 0.25}),
    ]
    scores = [
        {
            "tiny": {"type1": 0.5, "type2": [0.25, 0.875], "type2_mean": 0.5625},
            "other": {"type1": 0.125, "type2": [0.375]},
            "det": {"face": True, "score": 0.9},
        },
        {
            "tiny": {"type1": 0.375, "type2": [0.75]},
            "other": {"type1": 0.875},
            "det": {"face": False},
        },
        {"tiny": {"type1": 0.875, "type2": [0.125, 0.625]}, "det": {"face": True}},
        {"tiny": {"type2": [0.0]}, "other": {}},  # no type-I reference, no detector verdict
    ]
    rows = attack.method_rows("iterative", scores, judges, "tiny", "det", 2.5)
    # per judge, the type-I and type-II cosines listed by hand from the scores above
    type1 = {"tiny": [0.5, 0.375, 0.875], "other": [0.125, 0.875]}
    type2 = {"tiny": [0.25, 0.875, 0.75, 0.125, 0.625, 0.0], "other": [0.375]}
    assert [r["judge"] for r in rows] == ["tiny", "other"]
    for row, judge in zip(rows, judges, strict=True):
        one, two = type1[judge.name], type2[judge.name]
        _same(
            row,
            {
                "method": "iterative",
                "judge": judge.name,
                "setting": "white-box" if judge.name == "tiny" else "transfer",
                "people": len(one),
                "comparisons_type2": len(two),
                **{f"sar1@{r}": _share(one, t) for r, t in judge.thresholds.items()},
                **{f"sar2@{r}": _share(two, t) for r, t in judge.thresholds.items()},
                "mean_type1": sum(one) / len(one),
                "mean_type2": sum(two) / len(two),
                "face_rate": 2 / 3,
                "seconds_per_template": 2.5,
            },
        )
    # the counts are strictly between 0 and 1 and differ between the types and the rates
    assert rows[0]["sar1@1e-2"] == 2 / 3 and rows[0]["sar1@1e-3"] == 1 / 3
    assert rows[0]["sar2@1e-2"] == 3 / 6 and rows[0]["sar2@1e-3"] == 2 / 6
    assert rows[1]["sar1@1e-2"] == 1 / 2 and rows[1]["sar2@1e-2"] == 1.0


def test_a_method_without_scores_detector_or_timing_reports_nan_rates(recwarn):
    judges = [_calibrated("tiny", {"1e-2": 0.5})]
    scores = [{"tiny": {"type1": 0.75}, "det": {"face": True}}, {"other": {"type1": 0.5}}]
    (row,) = attack.method_rows("baseline", scores, judges, "another", None, None)
    assert row["setting"] == "transfer"
    assert row["people"] == 1 and row["comparisons_type2"] == 0
    assert row["sar1@1e-2"] == 1.0 and row["mean_type1"] == 0.75
    for key in ("sar2@1e-2", "mean_type2", "face_rate", "seconds_per_template"):
        assert math.isnan(row[key]), key
    (row,) = attack.method_rows("baseline", scores[1:], judges, "tiny", "det", 0.0)
    assert row["people"] == 0 and row["seconds_per_template"] == 0.0
    for key in ("sar1@1e-2", "mean_type1", "face_rate"):
        assert math.isnan(row[key]), key
    assert not recwarn.list  # no mean of an empty list is taken


def test_true_accept_rates_count_the_real_photos_genuine_pairs_at_or_above_each_threshold(
    recwarn,
):
    judge = _calibrated("tiny", {"1e-2": 0.5, "1e-3": 0.75})
    lone = attack.Calibrated("lone", {"1e-2": 0.25}, np.zeros(0), np.zeros(0), "thresholds.json")
    genuine, impostor = [0.875, 0.5, 0.25, 0.75, 0.625], [0.125, 0.5, 0.25, 0.375, 0.0, -0.25]
    assert judge.tar() == {"1e-2": 4 / 5, "1e-3": 2 / 5}
    first, second = attack.reference_rows([judge, lone])
    _same(
        first,
        {
            "judge": "tiny",
            "impostor_pairs": 6,
            "genuine_pairs": 5,
            "threshold@1e-2": 0.5,
            "threshold@1e-3": 0.75,
            "tar@1e-2": _share(genuine, 0.5),
            "tar@1e-3": _share(genuine, 0.75),
            "mean_genuine": sum(genuine) / 5,
            "mean_impostor": sum(impostor) / 6,
            "thresholds_from": "collection",
        },
    )
    _same(
        second,
        {
            "judge": "lone",
            "impostor_pairs": 0,
            "genuine_pairs": 0,
            "threshold@1e-2": 0.25,
            "tar@1e-2": math.nan,
            "mean_genuine": math.nan,
            "mean_impostor": math.nan,
            "thresholds_from": "thresholds.json",
        },
    )
    assert not recwarn.list  # no mean of an empty list is taken


def test_an_attack_reports_white_box_and_transfer_rates_and_resumes(collection, store):
    spec = validate(SPEC)
    result, folder = api.attack(spec, str(collection), identities=3)
    data = json.loads((folder / "attack.json").read_text())
    assert data["people"] == ["obama", "biden", "eileen"]  # several photos first, then names
    ((broken, why),) = data["skipped_photos"].items()
    assert broken == str(collection / "broken" / "broken_0001.png")
    assert why.startswith("not a readable image")
    attacked, judge = TinyModel(TinyModel.Params()), TinyJudge(TinyJudge.Params())
    photos = {
        name: [faces.read_photo(p) for p in sorted((collection / name).iterdir())]
        for name in PEOPLE
    }
    for model, setting in ((attacked, "white-box"), (judge, "transfer")):
        embedded = {n: [_embed(model, im) for im in ims] for n, ims in photos.items()}
        flat = [(n, e) for n, es in embedded.items() for e in es]
        impostor = sorted(
            (a @ b for i, (n, a) in enumerate(flat) for m, b in flat[i + 1 :] if n != m),
            reverse=True,
        )
        threshold = float(np.nextafter(impostor[math.floor(0.01 * len(impostor))], np.inf))
        (reference,) = [j for j in data["judges"] if j["judge"] == model.name]
        assert reference["impostor_pairs"] == len(impostor) == 11 * 10 // 2 - 3
        assert reference["threshold@1e-2"] == pytest.approx(threshold, abs=1e-6)
        # the true-accept rate: Obama's three photos give the only genuine pairs
        genuine = [a @ b for i, (n, a) in enumerate(flat) for m, b in flat[i + 1 :] if n == m]
        assert reference["genuine_pairs"] == len(genuine) == 3
        assert reference["tar@1e-2"] == pytest.approx(np.mean(np.array(genuine) >= threshold))
        assert reference["mean_genuine"] == pytest.approx(np.mean(genuine), abs=1e-5)
        # the reconstructions, judged here from their images
        type1, type2 = [], []
        for name in data["people"]:
            image = result.methods[0].images[name]
            mine = _embed(model, image)
            type1.append(mine @ embedded[name][0])
            type2 += [mine @ other for other in embedded[name][1:]]
            entry = data["per_person"][result.methods[0].name][name][model.name]
            assert entry["type1"] == pytest.approx(type1[-1], abs=1e-5)
        (row,) = [
            r for r in data["methods"] if r["judge"] == model.name and r["method"].startswith("it")
        ]
        assert row["setting"] == setting
        assert row["sar1@1e-2"] == pytest.approx(np.mean(np.array(type1) >= threshold))
        assert row["sar2@1e-2"] == pytest.approx(np.mean(np.array(type2) >= threshold))
        assert row["comparisons_type2"] == 2 and row["people"] == 3
        assert row["mean_type1"] == pytest.approx(np.mean(type1), abs=1e-5)
    assert {p.name for p in (folder / "people").iterdir()} == {
        "obama.jpg",
        "biden.jpg",
        "eileen.jpg",
    }
    assert (folder / "people.jpg").is_file()
    assert not (folder / "lineup").exists()  # one person with another photo: no line-up
    assert (folder / "roc.png").stat().st_size > 0 and "SAR I @1e-2" in (
        folder / "attack.md"
    ).read_text()
    client = MlflowClient(store)
    parent = client.get_run(result.run_id)
    assert parent.data.tags["facerecon.kind"] == "attack"
    assert "attack/iterative/tiny-judge/sar1_fmr1e-2" in parent.data.metrics
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert len(children) == 3
    # one more person: only that one is attacked; the three are read back from the store
    again, _ = api.attack(spec, str(collection), identities=4)
    assert again.run_id == result.run_id
    assert again.resumed == ["biden", "eileen", "obama"]
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert len(children) == 4
    before = data["per_person"][result.methods[0].name]
    after = json.loads((folder / "attack.json").read_text())["per_person"]
    assert after[again.methods[0].name]["obama"] == before["obama"]
    # `facerecon report` shows the evaluation's tables beside the runs'
    made = api.report("attack", store.removeprefix("sqlite:///").rsplit("/", 1)[0] + "/report")
    (table,) = made.folder.glob("attack-*.md")
    assert table.read_text() == (folder / "attack.md").read_text()


def test_an_interrupted_attack_keeps_what_finished_and_the_next_run_resumes(
    collection, store, monkeypatch
):
    calls = []

    def interrupted(variant, parent_run_id):
        calls.append(variant.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(variant, parent_run_id)

    original = local.run_variant
    monkeypatch.setattr(local, "run_variant", interrupted)
    spec = validate(SPEC)
    with pytest.raises(KeyboardInterrupt):
        api.attack(spec, str(collection), identities=2)
    client = MlflowClient(store)
    (experiment,) = [e.experiment_id for e in client.search_experiments() if e.name == "attack"]
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if r.data.tags.get("facerecon.kind") == "attack"]
    assert parent.info.status == "KILLED"
    assert [r.info.status for r in runs if r is not parent] == ["FINISHED"]
    monkeypatch.setattr(local, "run_variant", original)
    result, _ = api.attack(spec, str(collection), identities=2)
    assert result.resumed == ["obama"] and result.run_id == parent.info.run_id
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_the_line_up_shows_each_method_above_the_other_photos_of_its_people(tmp_path, store):
    from facerecon.evaluation import lineup

    root = tmp_path / "two"
    _write(root, {"a": ["builtin:obama/1", "builtin:obama/2"], "b": ["builtin:radar/0",
           "builtin:radar/1"], "c": ["builtin:biden"]})  # fmt: skip
    result, folder = api.attack(validate(SPEC), str(root), identities=3)
    key = json.loads((folder / "lineup" / "key.json").read_text())
    assert key["run_id"] == result.run_id is not None
    assert sorted(key["people"]) == ["a", "b"]  # c has no other photo
    assert sorted(key["methods"].values()) == sorted(m.name for m in result.methods)
    ((sheet),) = key["sheets"]
    methods = {m.name: m for m in result.methods}

    def expected(name: str, person: str) -> list[np.ndarray]:
        second = sorted((root / person).iterdir())[1]
        chip = faces.chip(result.model, faces.read_photo(second), True, "")[0]
        return [faces.resize(x, lineup.CELL) for x in (methods[name].images[person], chip)]

    for code, name in key["methods"].items():
        image = skimage.io.imread(folder / "lineup" / code / "sheet1.jpg") / 255
        for c, person in enumerate(sheet["letters"]):
            other = ({"a", "b"} - {person}).pop()
            number = sheet["key"]["AB"[c]]
            places = ((0, c), (1, number - 1))
            for (row, column), mine, theirs in zip(
                places, expected(name, person), expected(name, other), strict=True
            ):
                y, x = lineup.cell_origin(row, column)
                cell = image[y : y + lineup.CELL, x : x + lineup.CELL]
                assert np.abs(cell - mine).mean() < 0.03  # JPEG's loss
                if row == 1 or name != "baseline (start image)":
                    assert np.abs(cell - mine).mean() < np.abs(cell - theirs).mean()
    # the same sheets with look-alikes grouped: here both people on one sheet again
    alike = json.loads((folder / "lineup-lookalike" / "key.json").read_text())
    assert alike["grouping"].startswith("with look-alikes (by tiny-judge's cosine")
    assert sorted(alike["sheets"][0]["letters"]) == ["a", "b"]
    # an observer's answers, scored and logged to the evaluation's run
    (folder / "lineup" / "answers").mkdir()
    right = {"1": key["sheets"][0]["key"]}
    for code in key["methods"]:
        (folder / "lineup" / "answers" / f"{code}.json").write_text(
            json.dumps({"set": code, "observer": "o", "answers": right})
        )
    rows, logged = api.lineup(folder / "lineup")
    assert logged == result.run_id and all(r["correct"] == 2 for r in rows)
    run = MlflowClient(store).get_run(result.run_id)
    assert run.data.metrics["lineup/lineup/iterative_adam_/matched"] == 1.0
    assert run.data.metrics["lineup/lineup/baseline_start_image_/matched"] == 1.0
    logged_files = {a.path for a in MlflowClient(store).list_artifacts(result.run_id, "lineup")}
    assert {"lineup/scores.md", "lineup/scores.json", "lineup/answers"} <= logged_files


def test_one_photo_per_person_reports_type_one_only(tmp_path, store):
    root = tmp_path / "singles"
    _write(root, {name: PEOPLE[name][:1] for name in ("biden", "hanks", "r0")})
    spec = validate({**SPEC, "tracking": {**SPEC["tracking"], "enabled": False}})
    outcome = CliRunner().invoke(
        main, ["evaluate", _spec_file(tmp_path, spec), "--collection", str(root), "--no-track"]
    )
    assert outcome.exit_code == 0, outcome.output
    assert "one photo per person: no type II comparisons" in outcome.output
    data = json.loads((tmp_path / "evaluations" / "attack" / "attack.json").read_text())
    assert data["type2"] is False
    assert all(row["sar2@1e-2"] is None for row in data["methods"])


def _spec_file(tmp_path, spec) -> str:
    import yaml

    path = tmp_path / "attack.yaml"
    path.write_text(yaml.safe_dump(spec.resolved()))
    return str(path)


def test_a_generator_is_judged_by_the_same_protocol(collection, store):
    trained = api.run(
        validate(
            {
                **SPEC,
                "name": "gen",
                "solver": {
                    "name": "feedforward",
                    "generator": {"filters": 4, "depth": 2},
                    "steps": 3,
                    "batch": 4,
                    "report_every": 3,
                },
                "judges": {"models": [], "detector": None},
                "tracking": {"experiment": "gen"},
            }
        )
    )
    source = f"runs:/{trained.run_id}/generator"
    spec = validate({**SPEC, "tracking": {**SPEC["tracking"], "enabled": False}})
    result, folder = api.attack(spec, str(collection), identities=2, generators=(source,))
    generated = result.methods[1]
    assert [m.name for m in result.methods] == [
        "iterative (adam)",
        "generator 1",
        "baseline (start image)",
    ]
    assert json.loads((folder / "attack.json").read_text())["generators"] == {"generator 1": source}
    assert generated.seconds > 0
    judge = TinyJudge(TinyJudge.Params())
    for name in ("obama", "biden"):
        photo = faces.read_photo(sorted((collection / name).iterdir())[0])
        mine = _embed(judge, generated.images[name]) @ _embed(judge, photo)
        assert generated.scores[name]["tiny-judge"]["type1"] == pytest.approx(mine, abs=1e-5)
    # generators alone: the first method is a generator now, and it is judged too
    alone, _ = api.attack(
        spec, str(collection), identities=2, generators=(source,), iterative=False
    )
    assert [m.name for m in alone.methods] == ["generator 1", "baseline (start image)"]
    assert alone.methods[0].scores["obama"] == generated.scores["obama"]
    rows = [r for r in json.loads((folder / "attack.json").read_text())["methods"]]
    assert {(r["method"], r["judge"]) for r in rows} == {
        (m, j) for m in (r["method"] for r in rows) for j in ("tiny", "tiny-judge")
    }


def test_one_person_without_calibrated_judges_is_one_line(tmp_path):
    root = tmp_path / "one"
    _write(root, {"obama": PEOPLE["obama"]})
    spec = validate({**SPEC, "tracking": {**SPEC["tracking"], "enabled": False}})
    with pytest.raises(FaceReconError) as caught:
        api.attack(spec, str(root))
    assert caught.value.lines == [
        "judge 'tiny': the collection gives no impostor pairs (photos of two or more people) "
        "to set its thresholds, and the model has no calibrated ones"
    ]
