"""Blind line-ups: the sheets show what the key says, and the scores are the chance's."""

from __future__ import annotations

import itertools
import json
import string
from fractions import Fraction

import numpy as np
import pytest
import skimage.io
from click.testing import CliRunner

from facerecon.cli import main
from facerecon.core.errors import FaceReconError
from facerecon.evaluation import lineup


def _solid(value: float) -> np.ndarray:
    return np.full((lineup.CELL, lineup.CELL, 3), value, np.float32)


@pytest.fixture
def sheets(tmp_path):
    """Line-ups of 19 people for two methods; person i's images are grey level i / 20."""
    people = [f"person{i}" for i in range(19)]
    shade = {name: (i + 1) / 20 for i, name in enumerate(people)}
    images = {
        "iterative (adam)": {n: _solid(v) for n, v in shade.items()},
        "generator 8": {n: _solid(1 - v) for n, v in shade.items()},
    }
    photos = {n: _solid(v) for n, v in shade.items()}
    folder = tmp_path / "lineup"
    lineup.write(folder, people, images, photos, seed=3)
    return folder, people, shade


def _centre(sheet: np.ndarray, row: int, column: int) -> float:
    y, x = lineup.cell_origin(row, column)
    return sheet[y + lineup.CELL // 2, x + lineup.CELL // 2, 0] / 255


def test_each_sheet_shows_under_each_letter_the_person_its_key_names(sheets):
    folder, people, shade = sheets
    key = json.loads((folder / "key.json").read_text())
    assert sorted(key["methods"].values()) == ["generator 8", "iterative (adam)"]
    assert sorted(key["methods"]) == ["set1", "set2"]  # the sheets do not name the method
    shown = [n for sheet in key["sheets"] for n in sheet["letters"]]
    assert sorted(shown) == sorted(people)  # everyone once, in sheets of 6 or 7
    assert [len(s["letters"]) for s in key["sheets"]] == [7, 6, 6]
    for code, method in key["methods"].items():
        flip = method == "generator 8"
        for s, entry in enumerate(key["sheets"], 1):
            sheet = skimage.io.imread(folder / code / f"sheet{s}.jpg")
            for c, letter in enumerate(string.ascii_uppercase[: len(entry["letters"])]):
                number = entry["key"][letter]
                recon, photo = _centre(sheet, 0, c), _centre(sheet, 1, number - 1)
                person = shade[entry["letters"][c]]
                # JPEG keeps a flat grey within a few levels; the people are 13 levels apart
                assert recon == pytest.approx(1 - person if flip else person, abs=4 / 255)
                assert photo == pytest.approx(person, abs=4 / 255)
    assert any(s["letters"] != s["numbers"] for s in key["sheets"])  # two orders, not one


def test_look_alikes_share_a_sheet():
    # 14 people in two families of 7: within a family cosine 0.9, across 0.1
    family = np.array([0, 1] * 7)
    similarity = np.where(family[:, None] == family[None, :], 0.9, 0.1)
    people = [f"p{i}" for i in range(14)]
    for seed in range(5):
        sheets = lineup.plan(people, seed, similarity)
        assert [len(s.letters) for s in sheets] == [7, 7]
        for sheet in sheets:
            assert len({family[people.index(n)] for n in sheet.letters}) == 1
    # at random, some sheet mixes the families
    mixed = lineup.plan(people, 0)
    assert any(len({family[people.index(n)] for n in s.letters}) == 2 for s in mixed)


def _brute_force_p(sizes: list[int], at_least: int, one_to_one: bool) -> Fraction:
    """P(at least `at_least` right) over every possible answer, by enumeration."""
    per_sheet = []
    for n in sizes:
        answers = (
            itertools.permutations(range(n))
            if one_to_one
            else itertools.product(range(n), repeat=n)
        )
        per_sheet.append([sum(a == i for i, a in enumerate(ans)) for ans in answers])
    hits = [sum(c) for c in itertools.product(*per_sheet)]
    return Fraction(sum(h >= at_least for h in hits), len(hits))


def _key(sizes: list[int]) -> dict:
    """Sheets whose letter i is number i + 1."""
    return {
        "sheets": [
            {
                "letters": [f"s{s}p{i}" for i in range(n)],
                "key": {string.ascii_uppercase[i]: i + 1 for i in range(n)},
            }
            for s, n in enumerate(sizes)
        ]
    }


@pytest.mark.parametrize("one_to_one", [True, False])
def test_the_chance_of_as_many_matches_is_that_of_every_possible_answer(one_to_one):
    sizes = [3, 4]
    key = _key(sizes)
    if one_to_one:  # sheet 1: A, B right, C and D swapped; sheet 2: one cycle, none right
        answers = {"1": {"A": 2, "B": 3, "C": 1}, "2": {"A": 1, "B": 2, "C": 4, "D": 3}}
        right = 2
    else:  # everyone answered 1: one right per sheet
        answers = {"1": {"A": 1, "B": 1, "C": 1}, "2": {"A": 1, "B": 1, "C": 1, "D": 1}}
        right = 2
    result = lineup.score(key, answers)
    assert result["correct"] == right and result["people"] == 7
    assert result["expected by chance"] == pytest.approx(2.0)
    exact = _brute_force_p(sizes, right, one_to_one)
    assert result["p"] == pytest.approx(float(exact), rel=1e-9)
    assert lineup.score(key, {})["p"] == pytest.approx(1.0)


def test_answers_are_scored_by_the_command_and_bad_ones_are_one_line(sheets, store):
    folder, people, _ = sheets
    key = json.loads((folder / "key.json").read_text())
    (folder / "answers").mkdir()
    right = {str(s): e["key"] for s, e in enumerate(key["sheets"], 1)}
    (folder / "answers" / "a.json").write_text(
        json.dumps({"set": "set2", "observer": "reader", "answers": right})
    )
    result = CliRunner().invoke(main, ["lineup", str(folder)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads((folder / "scores.json").read_text())
    assert (row["method"], row["correct"], row["people"]) == (key["methods"]["set2"], 19, 19)
    # 7! 6! 6! one-to-one answers, one of them all right
    assert row["p"] == pytest.approx(1 / (5040 * 720 * 720), rel=1e-9)
    table = (folder / "scores.md").read_text()
    assert "| reader | 19 | 19 |" in table
    # pooled over observers: one expected match per sheet, 3 of 19
    assert f"| {row['method']} | 1 | 19 / 19 (100%) | 16% |" in table
    (folder / "answers" / "b.json").write_text(
        json.dumps({"set": "set2", "observer": "x", "answers": {"1": {"H": 1}}})
    )
    result = CliRunner().invoke(main, ["lineup", str(folder)])
    assert result.exit_code != 0
    assert (
        result.output.strip()
        .splitlines()[-1]
        .endswith("b.json: answers.1.H: 1: sheet 1 has letters A to G and numbers 1 to 7")
    )
    (folder / "answers" / "b.json").unlink()
    key["run_id"] = "0" * 32  # an evaluation run this store has never seen
    (folder / "key.json").write_text(json.dumps(key))
    result = CliRunner().invoke(main, ["lineup", str(folder)])
    assert result.exit_code != 0
    assert (
        result.output.strip()
        .splitlines()[-1]
        .endswith(
            f"key.json: run_id: {'0' * 32} is not in the MLflow store in force (MlflowException); "
            "set MLFLOW_TRACKING_URI to the evaluation's store"
        )
    )
    assert CliRunner().invoke(main, ["lineup", str(folder), "--no-log"]).exit_code == 0
    with pytest.raises(FaceReconError, match="a line-up needs at least 2 people"):
        lineup.plan(["only"])


def test_rewriting_a_line_up_keeps_the_answers_valid(sheets):
    folder, people, shade = sheets
    before = json.loads((folder / "key.json").read_text())["methods"]
    (folder / "answers").mkdir()
    (folder / "answers" / "a.json").write_text("{}")
    images = {
        "iterative (adam)": {n: _solid(v) for n, v in shade.items()},
        "generator 8": {n: _solid(1 - v) for n, v in shade.items()},
        "generator 9": {n: _solid(0.5) for n in shade},
    }
    photos = {n: _solid(v) for n, v in shade.items()}
    lineup.write(folder, people, images, photos, seed=3)  # one method more, same sheets
    after = json.loads((folder / "key.json").read_text())["methods"]
    assert after == {**before, "set3": "generator 9"}
    assert (folder / "answers" / "a.json").exists()
    # other people, other sheets: the old line-up and its answers are moved aside
    lineup.write(folder, people[1:], images, {n: photos[n] for n in people[1:]}, seed=3)
    aside = folder.with_name("lineup.replaced-1")
    assert (aside / "answers" / "a.json").exists()
    assert json.loads((aside / "key.json").read_text())["methods"] == after
    assert json.loads((folder / "key.json").read_text())["people"] == people[1:]
    assert not (folder / "answers").exists()
