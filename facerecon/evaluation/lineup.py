"""Blind line-ups: can an observer match reconstructions to other photos of their people?

A line-up sheet shows up to ``GROUP`` reconstructions, lettered in one random order, above
another photo of each of the same people, numbered in another. The observer writes which
number each letter is; ``score`` counts the matches against the key and says how likely so
many would be by guessing. The sheets name neither the people nor the method, so one
observer can be shown one method's sheets without knowing which it is.
"""

from __future__ import annotations

import json
import math
import re
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facerecon.core.errors import FaceReconError
from facerecon.evaluation.tables import markdown
from facerecon.faces.panels import grid

#: people per sheet: few enough to compare every pair by eye
GROUP = 8
#: pixels of one face on a sheet, and of the band that holds its label
CELL, BAND, GAP = 150, 26, 4
KEY_FILE = "key.json"
#: JPEG quality of the sheets (a few dozen sheets per evaluation)
QUALITY = 85


@dataclass(frozen=True)
class Sheet:
    """One sheet: who is under each letter and under each number."""

    letters: list[str]  # person under A, B, ...
    numbers: list[str]  # person under 1, 2, ...

    def key(self) -> dict[str, int]:
        """Letter -> the number of the same person."""
        return {
            string.ascii_uppercase[i]: self.numbers.index(name) + 1
            for i, name in enumerate(self.letters)
        }


def plan(people: list[str], seed: int = 0, similarity: np.ndarray | None = None) -> list[Sheet]:
    """The people split into sheets of at most ``GROUP``, each in two independent orders.

    With ``similarity`` (people x people, e.g. a judge's cosines between their photos),
    each sheet is a person drawn at random and the people most like them still unplaced:
    look-alikes, whom sex, age, glasses or a beard no longer tell apart.
    """
    if len(people) < 2:
        raise FaceReconError(f"a line-up needs at least 2 people (got {len(people)})")
    rng = np.random.default_rng(seed)
    left = list(rng.permutation(len(people)))
    sizes = [len(g) for g in np.array_split(left, math.ceil(len(people) / GROUP))]
    sheets = []
    for size in sizes:
        if similarity is None:
            group = left[:size]
        else:
            anchor = left[0]
            group = sorted(left, key=lambda j: (j != anchor, -similarity[anchor, j]))[:size]
        left = [i for i in left if i not in group]
        names = [people[i] for i in group]
        letters = [names[i] for i in rng.permutation(size)]
        sheets.append(Sheet(letters, [names[i] for i in rng.permutation(size)]))
    return sheets


def cell_origin(row: int, column: int) -> tuple[int, int]:
    """(y, x) of a face's top-left pixel on a sheet: row 0 reconstructions, 1 photos."""
    return BAND + row * (BAND + CELL + 2 * GAP) + GAP, GAP + column * (CELL + GAP)


def render(reconstructions: list[np.ndarray], photos: list[np.ndarray]) -> np.ndarray:
    """A sheet as uint8 RGB: lettered reconstructions above numbered photos."""
    rows = [grid([faces], CELL) for faces in (reconstructions, photos)]
    width = rows[0].shape[1]
    out = np.full((2 * (BAND + rows[0].shape[0]), width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        top = r * (BAND + row.shape[0]) + BAND
        out[top : top + row.shape[0]] = row
    image = Image.fromarray(out)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=BAND - 6)
    for r, labels in enumerate((string.ascii_uppercase, [str(i + 1) for i in range(26)])):
        for c in range(len(reconstructions)):
            y, x = cell_origin(r, c)
            draw.text((x + CELL // 2, y - GAP), labels[c], fill=(0, 0, 0), font=font, anchor="mb")
    return np.asarray(image)


def write(
    folder: Path,
    people: list[str],
    images: dict[str, dict[str, np.ndarray]],
    photos: dict[str, np.ndarray],
    seed: int = 0,
    similarity: np.ndarray | None = None,
    grouping: str = "at random",
    run_id: str | None = None,
) -> None:
    """Sheets of each method (``images``: method -> person -> image) into
    ``folder/set<n>/sheet<k>.jpg``, methods numbered in a shuffled order; the key, methods
    and how people were grouped (``grouping``, see :func:`plan`) into ``key.json``, with
    the evaluation's MLflow run (``run_id``), where scores are logged later. Rewriting the
    same sheets keeps the sets of methods left out this time (see :func:`_codes`)."""
    sheets = plan(people, seed, similarity)
    entries = [{"letters": sh.letters, "numbers": sh.numbers, "key": sh.key()} for sh in sheets]
    codes = _codes(folder, entries, list(images), seed)
    key = {"grouping": grouping, "run_id": run_id, "people": people, "methods": {}}
    for method, code in codes.items():
        key["methods"][f"set{code}"] = method
        if method not in images:  # an earlier run's set of these same sheets: still valid
            continue
        sub = folder / f"set{code}"
        sub.mkdir(parents=True, exist_ok=True)
        for s, sheet in enumerate(sheets, 1):
            recon = [images[method][name] for name in sheet.letters]
            Image.fromarray(render(recon, [photos[n] for n in sheet.numbers])).save(
                sub / f"sheet{s}.jpg", quality=QUALITY
            )
    key["sheets"] = entries
    (folder / KEY_FILE).write_text(json.dumps(key, indent=1, ensure_ascii=False) + "\n")


def _codes(folder: Path, sheets: list[dict], methods: list[str], seed: int) -> dict[str, int]:
    """Each method's set number. A folder that already holds these sheets keeps its
    methods' numbers, so observers' answers stay valid when methods are added; methods of
    the old key left out of ``methods`` keep theirs too (listed last), so that no later
    method takes over their sheets and answers. A line-up of other sheets with answers is
    moved aside (``<folder>.replaced-<k>``), never lost."""
    kept: dict[str, int] = {}
    path = folder / KEY_FILE
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("sheets") == sheets:
            kept = {m: int(c.removeprefix("set")) for c, m in old["methods"].items()}
        elif (folder / "answers").exists():
            k = 1
            while folder.with_name(f"{folder.name}.replaced-{k}").exists():
                k += 1
            folder.rename(folder.with_name(f"{folder.name}.replaced-{k}"))
    new = [m for m in methods if m not in kept]
    free = [c for c in range(1, len(kept) + len(new) + 1) if c not in kept.values()]
    order = np.random.default_rng([seed, 1]).permutation(len(free))
    fresh = dict(zip(new, (free[i] for i in order[: len(new)]), strict=True))
    codes = {m: kept.get(m, fresh.get(m)) for m in methods}
    return codes | {m: c for m, c in kept.items() if m not in codes}


def _fixed_points(n: int) -> np.ndarray:
    """P(k of n letters right) when the answer is a random one-to-one matching."""
    derangements = [1, 0]
    for m in range(2, n + 1):
        derangements.append((m - 1) * (derangements[-1] + derangements[-2]))
    return np.array(
        [math.comb(n, k) * derangements[n - k] / math.factorial(n) for k in range(n + 1)]
    )


def _guesses(n: int) -> np.ndarray:
    """P(k of n letters right) when each letter's number is guessed on its own."""
    return np.array([math.comb(n, k) * (1 / n) ** k * (1 - 1 / n) ** (n - k) for k in range(n + 1)])


def score(key: dict, answers: dict[str, dict[str, int]]) -> dict[str, float]:
    """Matches of one observer's answers (sheet number -> letter -> number) and the chance
    of at least as many by guessing: each sheet answered one-to-one is compared with random
    matchings, any other with independent guesses."""
    correct, total, null = 0, 0, np.array([1.0])
    for s, sheet in enumerate(key["sheets"], 1):
        given = {k.upper(): int(v) for k, v in answers.get(str(s), {}).items()}
        n = len(sheet["letters"])
        correct += sum(given.get(letter) == number for letter, number in sheet["key"].items())
        total += n
        one_to_one = sorted(given.values()) == list(range(1, n + 1))
        null = np.convolve(null, _fixed_points(n) if one_to_one else _guesses(n))
    return {
        "correct": correct,
        "people": total,
        "expected by chance": float(np.dot(np.arange(len(null)), null)),
        "p": float(null[correct:].sum()),
    }


def _answers(path: Path, key: dict) -> tuple[str, str, dict[str, dict[str, int]]]:
    """(set, observer, answers) of one answers file, checked against the key."""
    try:
        data = json.loads(path.read_text())
        chosen, observer, answers = data["set"], str(data["observer"]), data["answers"]
    except (ValueError, KeyError, TypeError) as exc:
        raise FaceReconError(
            f"{path}: not a line-up answers file; expected "
            '{"set": "set1", "observer": "...", "answers": {"1": {"A": 3, ...}, ...}} '
            f"({exc!r})"
        ) from None
    if chosen not in key["methods"]:
        raise FaceReconError(f"{path}: set: {chosen!r} is none of {', '.join(key['methods'])}")
    for s, given in answers.items():
        if not (s.isdigit() and 1 <= int(s) <= len(key["sheets"])):
            raise FaceReconError(f"{path}: answers.{s}: no such sheet (1 to {len(key['sheets'])})")
        n = len(key["sheets"][int(s) - 1]["letters"])
        for letter, number in given.items():
            if letter.upper() not in string.ascii_uppercase[:n] or number not in range(1, n + 1):
                raise FaceReconError(
                    f"{path}: answers.{s}.{letter}: {number!r}: sheet {s} has letters A to "
                    f"{string.ascii_uppercase[n - 1]} and numbers 1 to {n}"
                )
    return chosen, observer, answers


def _natural(text: str) -> list:
    """Sort key: observer 2 before observer 10 (split parts alternate text and digits)."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]


def pooled(rows: list[dict]) -> dict[str, tuple[int, int, int, float]]:
    """Per method: (observers, matches, people shown, matches expected by chance)."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        out[method] = (
            len(mine),
            sum(r["correct"] for r in mine),
            sum(r["people"] for r in mine),
            sum(r["expected by chance"] for r in mine),
        )
    return out


def log(folder: Path, rows: list[dict]) -> str | None:
    """Scores and answers into the evaluation's MLflow run, under ``<folder name>/``, and
    each method's share matched as ``lineup/<folder name>/<method>/matched``; the run id,
    or None when the key names no run."""
    from facerecon.tracking import runs
    from facerecon.tracking.store import client, safe_key

    run_id = json.loads((folder / KEY_FILE).read_text()).get("run_id")
    if not run_id:
        return None
    tracking = client()
    try:
        tracking.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - any store error is the same answer here
        raise FaceReconError(
            f"{folder / KEY_FILE}: run_id: {run_id} is not in the MLflow store in force "
            f"({exc.__class__.__name__}); set MLFLOW_TRACKING_URI to the evaluation's store"
        ) from None
    for name in ("scores.md", "scores.json"):
        tracking.log_artifact(run_id, str(folder / name), folder.name)
    tracking.log_artifacts(run_id, str(folder / "answers"), f"{folder.name}/answers")
    metrics = {
        f"lineup/{folder.name}/{safe_key(method)}/matched": matched / shown
        for method, (_, matched, shown, _) in pooled(rows).items()
    }
    runs.log_metrics(tracking, run_id, runs.rows(metrics))
    return run_id


def score_folder(folder: Path) -> list[dict]:
    """Score every ``answers/*.json`` in a line-up folder against its key; the rows are
    also written to ``scores.json`` and ``scores.md`` there."""
    path = folder / KEY_FILE
    if not path.exists():
        raise FaceReconError(f"{folder}: no {KEY_FILE}; `facerecon evaluate` writes line-ups")
    key = json.loads(path.read_text())
    files = sorted((folder / "answers").glob("*.json"))
    if not files:
        raise FaceReconError(f"{folder / 'answers'}: no answers (*.json) to score")
    rows = []
    for file in files:
        chosen, observer, answers = _answers(file, key)
        row = {"method": key["methods"][chosen], "set": chosen, "observer": observer}
        rows.append({**row, **score(key, answers)})
    order = list(key["methods"].values())
    rows.sort(key=lambda r: (order.index(r["method"]), _natural(r["observer"])))
    (folder / "scores.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    each = [
        [r["method"], r["observer"], str(r["correct"]), str(r["people"]),
         f"{r['expected by chance']:.1f}", f"{r['p']:.2g}"]
        for r in rows
    ]  # fmt: skip
    pooled_rows = [
        [method, str(observers), f"{matched} / {shown} ({matched / shown:.0%})",
         f"{chance / shown:.0%}"]
        for method, (observers, matched, shown, chance) in pooled(rows).items()
    ]  # fmt: skip
    lines = [
        f"People grouped {key.get('grouping', 'at random')}.",
        "",
        *markdown(
            ["method", "observer", "matched", "people", "expected by chance",
             "p (as many by chance)"],
            each,
        ),
        "",
        *markdown(["method", "observers", "matched, all observers", "by chance"], pooled_rows),
    ]  # fmt: skip
    (folder / "scores.md").write_text("\n".join(lines) + "\n")
    return rows
