"""Blind line-ups: the sheets show what the key says, and the scores are the chance's."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import string
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import skimage.io
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFont

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


def _brute_force_p(sizes: list[int], at_least: int, one_to_one: bool | list[bool]) -> Fraction:
    """P(at least `at_least` right) over every possible answer, by enumeration; each sheet
    answered one-to-one (every matching equally likely) or not (every guess)."""
    per_sheet = []
    modes = one_to_one if isinstance(one_to_one, list) else [one_to_one] * len(sizes)
    for n, matching in zip(sizes, modes, strict=True):
        answers = (
            itertools.permutations(range(n)) if matching else itertools.product(range(n), repeat=n)
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


# --- planning --------------------------------------------------------------------------------


def test_a_sheets_key_gives_each_letter_the_number_of_the_same_person():
    sheet = lineup.Sheet(letters=["c", "a", "b"], numbers=["b", "c", "a"])
    # A is c, the 2nd number; B is a, the 3rd; C is b, the 1st
    assert sheet.key() == {"A": 2, "B": 3, "C": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        sheet.letters = ["a", "b", "c"]  # a planned sheet stays the sheet its key was made of


@pytest.mark.parametrize(
    ("count", "sizes"),
    [(2, [2]), (8, [8]), (9, [5, 4]), (16, [8, 8]), (17, [6, 6, 5]), (25, [7, 6, 6, 6])],
)
def test_people_fill_as_few_sheets_of_at_most_eight_as_can_hold_them_as_evenly_as_can_be(
    count, sizes
):
    people = [f"p{i}" for i in range(count)]
    sheets = lineup.plan(people, seed=1)
    assert [len(s.letters) for s in sheets] == sizes
    assert sorted(n for s in sheets for n in s.letters) == sorted(people)
    for sheet in sheets:
        assert sorted(sheet.numbers) == sorted(sheet.letters)


def test_random_sheets_are_runs_of_one_shuffle_each_shown_in_two_further_shuffles():
    people = [f"p{i}" for i in range(17)]
    rng = np.random.default_rng(5)
    everyone = [people[i] for i in rng.permutation(17)]
    expected, start = [], 0
    for size in (6, 6, 5):
        group, start = everyone[start : start + size], start + size
        letters = [group[i] for i in rng.permutation(size)]
        expected.append((letters, [group[i] for i in rng.permutation(size)]))
    assert [(s.letters, s.numbers) for s in lineup.plan(people, 5)] == expected
    assert lineup.plan(people, 5) == lineup.plan(people, 5)
    assert lineup.plan(people, 6) != lineup.plan(people, 5)
    assert [(s.letters, s.numbers) for s in lineup.plan(people)] == [
        (s.letters, s.numbers) for s in lineup.plan(people, 0)
    ]


def test_a_look_alike_sheet_is_a_random_person_and_the_unplaced_people_nearest_them():
    # people on a line, alike as they are near; the diagonal ranks no one first, so the
    # person drawn must be placed for being drawn, not for being most like themselves
    where = np.random.default_rng(11).random(17)
    similarity = -np.abs(where[:, None] - where[None, :])
    np.fill_diagonal(similarity, -10.0)
    people = [f"p{i}" for i in range(17)]
    rng = np.random.default_rng(2)
    left = list(rng.permutation(17))
    expected = []
    for size in (6, 6, 5):
        drawn = left[0]
        nearest = sorted(
            (j for j in left if j != drawn), key=lambda j: abs(where[j] - where[drawn])
        )
        group = [people[j] for j in [drawn, *nearest[: size - 1]]]
        left = [j for j in left if people[j] not in group]
        letters = [group[i] for i in rng.permutation(size)]
        expected.append((letters, [group[i] for i in rng.permutation(size)]))
    assert [(s.letters, s.numbers) for s in lineup.plan(people, 2, similarity)] == expected


@pytest.mark.parametrize("people", [[], ["only"]])
def test_a_line_up_of_fewer_than_two_people_is_refused(people):
    with pytest.raises(FaceReconError) as caught:
        lineup.plan(people)
    assert str(caught.value) == f"a line-up needs at least 2 people (got {len(people)})"


# --- rendering -------------------------------------------------------------------------------


def test_a_face_sits_at_its_cells_origin():
    # a 26-pixel band for the labels, then a 4-pixel margin, above each row of 150-pixel
    # faces 4 pixels apart; the photo row starts below the first row's margin and band
    assert lineup.cell_origin(0, 0) == (30, 4)
    assert lineup.cell_origin(0, 3) == (30, 4 + 3 * 154)
    assert lineup.cell_origin(1, 0) == (30 + 184, 4)
    assert lineup.cell_origin(1, 7) == (214, 4 + 7 * 154)


def test_a_sheet_is_its_faces_in_two_rows_under_letters_and_numbers_drawn_by_pil():
    count = 26  # A to Z: the most a sheet can letter
    levels = [20 + 8 * c for c in range(count)]  # grey levels, exact in uint8
    recon = [_solid(v / 255) for v in levels]
    photos = [_solid((255 - v) / 255) for v in levels]
    sheet = lineup.render(recon, photos)
    assert sheet.dtype == np.uint8
    assert sheet.shape == (2 * (26 + 158), count * 154 + 4, 3)
    # expected: a white page, each label centred above its face, its bottom 4 pixels above
    # it, black, in PIL's default font at 20 pixels
    page = Image.new("RGB", (sheet.shape[1], sheet.shape[0]), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=20)
    faces = np.zeros(sheet.shape[:2], bool)
    for row, labels in enumerate([string.ascii_uppercase, [str(c + 1) for c in range(count)]]):
        for c in range(count):
            y, x = 30 + 184 * row, 4 + 154 * c
            draw.text((x + 75, y - 4), labels[c], fill=(0, 0, 0), font=font, anchor="mb")
            face = sheet[y : y + 150, x : x + 150]
            assert (face == (levels[c] if row == 0 else 255 - levels[c])).all()
            faces[y : y + 150, x : x + 150] = True
    assert np.array_equal(sheet[~faces], np.asarray(page)[~faces])


def _written(folder, people, methods, seed=0, **kwargs):
    """A line-up of flat faces: person i's face and photo grey (i + 1) / 10 (any method)."""
    shade = {name: _solid((i + 1) / 10) for i, name in enumerate(people)}
    lineup.write(folder, people, {m: shade for m in methods}, shade, seed, **kwargs)
    return json.loads((folder / "key.json").read_text())


def test_methods_get_set_numbers_in_a_shuffle_drawn_from_the_seed(tmp_path):
    methods = ["m1", "m2", "m3", "m4", "m5"]
    key = _written(tmp_path / "lineup", ["Zoë", "Ana", "Bo"], methods, seed=4)
    order = np.random.default_rng([4, 1]).permutation(5)
    assert list(key["methods"].items()) == [
        (f"set{order[j] + 1}", m) for j, m in enumerate(methods)
    ]
    assert sorted(p.name for p in (tmp_path / "lineup").iterdir()) == sorted(
        ["key.json", *(f"set{c}" for c in range(1, 6))]
    )
    assert key["grouping"] == "at random" and key["run_id"] is None
    assert key["people"] == ["Zoë", "Ana", "Bo"]
    (sheet,) = key["sheets"]
    assert sheet["key"] == lineup.Sheet(sheet["letters"], sheet["numbers"]).key()
    assert sorted(sheet["letters"]) == sorted(sheet["numbers"]) == ["Ana", "Bo", "Zoë"]
    # a file to read in an editor: one-space indents, names as written, a final newline
    text = (tmp_path / "lineup" / "key.json").read_text()
    assert text.startswith('{\n "grouping": "at random",\n "run_id": null,\n "people": [\n  "Zoë",')
    assert text.endswith("]\n}\n")


def test_a_line_up_written_without_a_seed_is_that_of_seed_0(tmp_path):
    shade = {name: _solid(0.1 * (i + 1)) for i, name in enumerate("abcdefgh")}
    lineup.write(tmp_path / "default", list(shade), {"m": shade}, shade)
    default = json.loads((tmp_path / "default" / "key.json").read_text())
    assert default == _written(tmp_path / "seed0", list(shade), ["m"], seed=0)


def test_a_look_alike_line_up_puts_look_alikes_on_each_sheet_of_its_key(tmp_path):
    family = np.array([0, 1] * 7)  # two families of 7: within a family cosine 0.9, across 0.1
    similarity = np.where(family[:, None] == family[None, :], 0.9, 0.1)
    people = [f"p{i}" for i in range(14)]
    key = _written(tmp_path / "lineup", people, ["m"], 3, similarity=similarity)
    for sheet in key["sheets"]:
        assert len({family[people.index(n)] for n in sheet["letters"]}) == 1


def test_the_sheets_are_jpegs_of_quality_85(tmp_path):
    _written(tmp_path / "lineup", ["a", "b"], ["m"], grouping="by look-alikes", run_id="r1")
    key = json.loads((tmp_path / "lineup" / "key.json").read_text())
    assert (key["grouping"], key["run_id"]) == ("by look-alikes", "r1")
    reference = io.BytesIO()
    Image.new("RGB", (8, 8)).save(reference, "JPEG", quality=85)
    sheet = Image.open(tmp_path / "lineup" / "set1" / "sheet1.jpg")
    assert sheet.format == "JPEG"
    assert sheet.quantization == Image.open(reference).quantization


# --- re-runs ---------------------------------------------------------------------------------


def test_a_rewrite_of_the_same_sheets_keeps_every_number_and_numbers_newcomers_after_them(
    tmp_path,
):
    folder, people = tmp_path / "lineup", ["a", "b", "c"]
    first = _written(folder, people, ["m1", "m2", "m3"], seed=2)["methods"]
    (folder / "answers").mkdir()
    (folder / "answers" / "o.json").write_text("{}")
    code = {m: c for c, m in first.items()}
    # m2 and m3 left out: their sheets stay in the folder, and so do their numbers
    second = _written(folder, people, ["m4", "m1"], seed=2)["methods"]
    assert second == {"set4": "m4", code["m1"]: "m1", code["m2"]: "m2", code["m3"]: "m3"}
    assert list(second.values())[:2] == ["m4", "m1"]
    # two newcomers share the free numbers 5 and 6 in the seed's shuffled order
    third = _written(folder, people, ["m5", "m2", "m6"], seed=2)["methods"]
    order = np.random.default_rng([2, 1]).permutation(2)
    assert {m: c for c, m in third.items()} == {
        "m5": f"set{5 + order[0]}",
        "m2": code["m2"],
        "m6": f"set{5 + order[1]}",
        "m1": code["m1"],
        "m3": code["m3"],
        "m4": "set4",
    }
    assert (folder / "answers" / "o.json").exists()
    assert not folder.with_name("lineup.replaced-1").exists()


def test_a_rewrite_keeps_the_numbers_of_a_key_with_gaps_and_fills_them_in_the_seeds_order(
    tmp_path,
):
    folder, people = tmp_path / "lineup", ["a", "b", "c"]
    key = _written(folder, people, ["m1", "m2", "m3"], seed=7)
    key["methods"] = {"set1": "m1", "set3": "m3"}  # numbers left by an earlier version
    (folder / "key.json").write_text(json.dumps(key))
    after = _written(folder, people, ["m3", "m4", "m1"], seed=7)["methods"]
    free = [2, 4]  # 1 to 3 hold two methods and one gap; one newcomer, 4 numbers in all
    assert after == {
        "set3": "m3",
        f"set{free[np.random.default_rng([7, 1]).permutation(2)[0]]}": "m4",
        "set1": "m1",
    }


def test_other_sheets_with_answers_move_the_old_line_up_aside_after_earlier_ones(tmp_path):
    folder = tmp_path / "lineup"
    folder.with_name("lineup.replaced-1").mkdir()
    old = _written(folder, ["a", "b", "c"], ["m1"], seed=1)
    (folder / "answers").mkdir()
    (folder / "answers" / "o.json").write_text("{}")
    new = _written(folder, ["a", "b", "c"], ["m1", "m2"], seed=2)  # another seed, other sheets
    assert new["sheets"] != old["sheets"]
    aside = folder.with_name("lineup.replaced-2")
    assert json.loads((aside / "key.json").read_text()) == old
    assert (aside / "answers" / "o.json").read_text() == "{}"
    assert (aside / "set1" / "sheet1.jpg").exists()
    assert not any(folder.with_name("lineup.replaced-1").iterdir())
    order = np.random.default_rng([2, 1]).permutation(2)
    assert new["methods"] == {f"set{order[0] + 1}": "m1", f"set{order[1] + 1}": "m2"}


def test_other_sheets_without_answers_are_written_over_the_old_ones(tmp_path):
    folder = tmp_path / "lineup"
    _written(folder, ["a", "b", "c"], ["m1", "m2", "m3"], seed=1)
    new = _written(folder, ["a", "b"], ["m3"], seed=1)
    assert new["methods"] == {"set1": "m3"}  # numbered afresh: no answers to keep valid
    assert new["people"] == ["a", "b"]
    assert not list(tmp_path.glob("lineup.replaced-*"))


# --- scoring ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 7))
def test_the_chance_models_are_the_counts_of_every_possible_answer(n):
    matchings = Counter(
        sum(a == i for i, a in enumerate(p)) for p in itertools.permutations(range(n))
    )
    guesses = Counter(
        sum(a == i for i, a in enumerate(p)) for p in itertools.product(range(n), repeat=n)
    )
    assert lineup._fixed_points(n) == pytest.approx(
        [matchings[k] / math.factorial(n) for k in range(n + 1)], abs=1e-15
    )
    assert lineup._guesses(n) == pytest.approx([guesses[k] / n**n for k in range(n + 1)], abs=1e-15)


def test_a_sheet_answered_one_to_one_and_one_answered_in_part_are_each_judged_on_their_own():
    key = _key([3, 4])
    # sheet 1 all right, in lower case and numbers as text; sheet 2: two letters, one right
    answers = {"1": {"a": "1", "b": "2", "c": 3}, "2": {"A": 1, "B": 3}}
    result = lineup.score(key, answers)
    assert (result["correct"], result["people"]) == (4, 7)
    assert result["expected by chance"] == pytest.approx(2.0)
    assert result["p"] == pytest.approx(float(_brute_force_p([3, 4], 4, [True, False])), rel=1e-9)
    # sheet 2 alone, all right; sheet 1 unanswered, as if guessed
    second = lineup.score(key, {"2": {"A": 1, "B": 2, "C": 3, "D": 4}})
    assert second["correct"] == 4
    assert second["p"] == pytest.approx(float(_brute_force_p([3, 4], 4, [False, True])), rel=1e-9)


def _scored_folder(tmp_path, run_id=None, grouping=True):
    """A hand-written key (sheets of 3 and 2, methods listed set2 first) and three observers."""
    folder = tmp_path / "lineup-lookalike"
    (folder / "answers").mkdir(parents=True)
    key = {
        "run_id": run_id,
        "people": ["p0", "p1", "p2", "p3", "p4"],
        "methods": {"set2": "beta (b)", "set1": "alpha"},
        "sheets": [
            {"letters": ["p0", "p1", "p2"], "numbers": ["p2", "p0", "p1"]},
            {"letters": ["p4", "p3"], "numbers": ["p3", "p4"]},
        ],
    }
    if grouping:
        key["grouping"] = "by look-alikes"
    key["sheets"][0]["key"] = {"A": 2, "B": 3, "C": 1}
    key["sheets"][1]["key"] = {"A": 2, "B": 1}
    (folder / "key.json").write_text(json.dumps(key))
    observers = {
        # one-to-one on both sheets: A right, then both right
        "a.json": ("set2", "obs10", {"1": {"A": 2, "B": 1, "C": 3}, "2": {"A": 2, "B": 1}}),
        # sheet 1 all right (lower case), sheet 2 one letter, wrong
        "b.json": ("set2", "obs2", {"1": {"a": 2, "b": 3, "c": 1}, "2": {"A": 1}}),
        # everyone number 1 on sheet 1: C right; sheet 2 not answered
        "c.json": ("set1", "José", {"1": {"A": 1, "B": 1, "C": 1}}),
    }
    for name, (chosen, observer, answers) in observers.items():
        data = {"set": chosen, "observer": observer, "answers": answers}
        (folder / "answers" / name).write_text(json.dumps(data))
    (folder / "answers" / "notes.txt").write_text("not answers")
    return folder


def _expected_rows() -> list[dict]:
    p = [
        _brute_force_p([3, 2], 3, [True, False]),
        _brute_force_p([3, 2], 3, [True, True]),
        _brute_force_p([3, 2], 1, [False, False]),
    ]
    rows = [
        ("beta (b)", "set2", "obs2", 3),
        ("beta (b)", "set2", "obs10", 3),
        ("alpha", "set1", "José", 1),
    ]
    return [
        {
            "method": method,
            "set": chosen,
            "observer": observer,
            "correct": correct,
            "people": 5,
            "expected by chance": pytest.approx(2.0),
            "p": pytest.approx(float(chance), rel=1e-9),
        }
        for (method, chosen, observer, correct), chance in zip(rows, p, strict=True)
    ]


def test_scores_are_sorted_by_the_keys_methods_then_observers_in_natural_order(tmp_path):
    folder = _scored_folder(tmp_path)
    rows = lineup.score_folder(folder)
    assert rows == _expected_rows()
    assert json.loads((folder / "scores.json").read_text()) == _expected_rows()
    text = (folder / "scores.json").read_text()
    assert text.startswith('[\n {\n  "method": "beta (b)",') and '"José"' in text
    assert text.endswith("}\n]\n")
    ps = [f"{r['p'].expected:.2g}" for r in _expected_rows()]
    assert (folder / "scores.md").read_text() == "\n".join(
        [
            "People grouped by look-alikes.",
            "",
            "| method | observer | matched | people | expected by chance | p (as many by chance) |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| beta (b) | obs2 | 3 | 5 | 2.0 | {ps[0]} |",
            f"| beta (b) | obs10 | 3 | 5 | 2.0 | {ps[1]} |",
            f"| alpha | José | 1 | 5 | 2.0 | {ps[2]} |",
            "",
            "| method | observers | matched, all observers | by chance |",
            "| --- | --- | --- | --- |",
            "| beta (b) | 2 | 6 / 10 (60%) | 40% |",
            "| alpha | 1 | 1 / 5 (20%) | 40% |",
            "",
        ]
    )


def test_a_key_that_does_not_say_how_people_were_grouped_was_grouped_at_random(tmp_path):
    folder = _scored_folder(tmp_path, grouping=False)
    lineup.score_folder(folder)
    assert (folder / "scores.md").read_text().startswith("People grouped at random.\n\n")


def test_observers_sort_by_the_numbers_in_their_names():
    names = ["r10b2", "r2b10", "r2b9", "r10b10", "x", "r2"]
    assert sorted(names, key=lineup._natural) == ["r2", "r2b9", "r2b10", "r10b2", "r10b10", "x"]


def test_pooling_sums_each_methods_observers_in_the_order_methods_first_appear():
    rows = [
        {"method": "b", "correct": 3, "people": 5, "expected by chance": 2.0},
        {"method": "a", "correct": 1, "people": 7, "expected by chance": 2.5},
        {"method": "b", "correct": 4, "people": 6, "expected by chance": 1.5},
    ]
    assert list(lineup.pooled(rows).items()) == [("b", (2, 7, 11, 3.5)), ("a", (1, 1, 7, 2.5))]


def test_scores_and_answers_land_in_the_evaluations_run(tmp_path, store):
    from facerecon import api
    from facerecon.tracking import client

    tracking = client()
    run_id = tracking.create_run(tracking.create_experiment("evaluation")).info.run_id
    folder = _scored_folder(tmp_path, run_id=run_id)
    before = time.time() * 1000
    rows, logged = api.lineup(folder)
    after = time.time() * 1000
    assert logged == run_id and rows == _expected_rows()
    for method, share in [("beta_b_", 0.6), ("alpha", 0.2)]:
        (metric,) = tracking.get_metric_history(run_id, f"lineup/lineup-lookalike/{method}/matched")
        assert metric.value == pytest.approx(share)
        assert metric.step == 0 and before - 1 <= metric.timestamp <= after + 1
    listed = {a.path for a in tracking.list_artifacts(run_id, "lineup-lookalike")}
    assert listed == {f"lineup-lookalike/{n}" for n in ("scores.md", "scores.json", "answers")}
    answers = {a.path for a in tracking.list_artifacts(run_id, "lineup-lookalike/answers")}
    assert answers == {
        f"lineup-lookalike/answers/{n}" for n in ("a.json", "b.json", "c.json", "notes.txt")
    }
    downloaded = tracking.download_artifacts(run_id, "lineup-lookalike/scores.md", str(tmp_path))
    assert Path(downloaded).read_text() == (folder / "scores.md").read_text()


def test_a_key_without_a_run_logs_nowhere(tmp_path, store):
    from facerecon import api

    folder = _scored_folder(tmp_path, run_id="")
    assert api.lineup(folder) == (_expected_rows(), None)
    assert api.lineup(folder, log=False)[1] is None


# --- the command's errors --------------------------------------------------------------------


def _error(folder) -> str:
    """The command's one line of output, without its ``error:`` prefix."""
    result = CliRunner().invoke(main, ["lineup", str(folder), "--no-log"])
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ")
    return line.removeprefix("error: ")


def test_a_folder_without_a_key_or_answers_is_one_line(tmp_path):
    assert _error(tmp_path) == f"{tmp_path}: no key.json; `facerecon evaluate` writes line-ups"
    folder = _scored_folder(tmp_path)
    for file in (folder / "answers").glob("*.json"):
        file.unlink()
    assert _error(folder) == f"{folder / 'answers'}: no answers (*.json) to score"


def _not_answers(text: str) -> str:
    try:
        data = json.loads(text)
        data["set"], data["observer"], data["answers"]
    except (ValueError, KeyError, TypeError) as exc:
        reason = repr(exc)
    return (
        "not a line-up answers file; expected "
        '{"set": "set1", "observer": "...", "answers": {"1": {"A": 3, ...}, ...}} '
        f"({reason})"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{", _not_answers("{")),
        ('{"set": "set1", "answers": {}}', _not_answers('{"set": "set1", "answers": {}}')),
        ("[1]", _not_answers("[1]")),
        ({"set": "set3", "answers": {}}, "set: 'set3' is none of set2, set1"),
        ({"set": "set1", "answers": {"0": {}}}, "answers.0: no such sheet (1 to 2)"),
        ({"set": "set1", "answers": {"3": {}}}, "answers.3: no such sheet (1 to 2)"),
        ({"set": "set1", "answers": {"x": {}}}, "answers.x: no such sheet (1 to 2)"),
        (
            {"set": "set1", "answers": {"2": {"A": 2, "C": 1}}},
            "answers.2.C: 1: sheet 2 has letters A to B and numbers 1 to 2",
        ),
        (
            {"set": "set1", "answers": {"1": {"d": 1}}},
            "answers.1.d: 1: sheet 1 has letters A to C and numbers 1 to 3",
        ),
        (
            {"set": "set1", "answers": {"1": {"A": 0}}},
            "answers.1.A: 0: sheet 1 has letters A to C and numbers 1 to 3",
        ),
        (
            {"set": "set1", "answers": {"1": {"c": 3, "B": 4}}},
            "answers.1.B: 4: sheet 1 has letters A to C and numbers 1 to 3",
        ),
        (
            {"set": "set1", "answers": {"1": {"A": "2"}}},
            "answers.1.A: '2': sheet 1 has letters A to C and numbers 1 to 3",
        ),
    ],
)
def test_an_answers_file_that_does_not_fit_the_key_is_one_line(tmp_path, data, message):
    folder = _scored_folder(tmp_path)
    path = folder / "answers" / "d.json"
    text = data if isinstance(data, str) else json.dumps({"observer": "o", **data})
    path.write_text(text)
    assert _error(folder) == f"{path}: {message}"


def test_an_observer_given_as_a_number_is_named_by_it(tmp_path):
    folder = _scored_folder(tmp_path)
    answers = {"1": {"A": 2, "B": 3, "C": 1}, "2": {"A": 2, "B": 1}}
    (folder / "answers" / "d.json").write_text(
        json.dumps({"set": "set1", "observer": 7, "answers": answers})
    )
    rows = lineup.score_folder(folder)
    assert [(r["observer"], r["correct"]) for r in rows][2:] == [("7", 5), ("José", 1)]
