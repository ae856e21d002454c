"""An attack evaluation written out: ``attack.json`` (every number), ``attack.md`` (the
tables), ``roc.png`` (acceptance against false-match rate per judge) and one image per
attacked person (target photo | another photo | each method's reconstruction) and blind
line-up sheets (``lineup/``); into a folder and into the evaluation's MLflow run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from facerecon.core.errors import FaceReconError
from facerecon.engine.validation import shown
from facerecon.evaluation import attack, lineup, realism
from facerecon.evaluation.attack_sweep import AttackResult
from facerecon.evaluation.tables import markdown
from facerecon.faces import photos as faces
from facerecon.faces.panels import labelled_grid
from facerecon.tracking.store import safe_key

#: the chips drawn in the per-person images
SIZE = 150


def record(result: AttackResult) -> dict[str, Any]:
    """Everything an attack evaluation measured, as JSON data."""
    collection = result.collection
    return {
        "spec": result.spec.name,
        "collection": collection.source,
        "attacked": result.attacked,
        "people": [p.name for p in collection.people],
        "type2": collection.type2,
        "skipped_photos": {str(k): v for k, v in collection.skipped.items()},
        "generators": {m.name: m.source for m in result.methods if m.source},
        "resumed_people": result.resumed,
        "failed_people": result.failed,
        "judges": _plain(attack.reference_rows(result.judges)),
        "methods": _plain(result.rows()),
        "per_person": {m.name: {p: _plain(s) for p, s in m.scores.items()} for m in result.methods},
        "realism": realism_record(result),
    }


def realism_record(result: AttackResult) -> dict[str, Any]:
    """Skin tone and texture (:mod:`facerecon.evaluation.realism`) of every method's
    reconstructions against the person's photos, and the photos' own texture, on the
    attacked model's chips."""
    people = result.collection.people
    chips = {p.name: [_chip(result, photo) for photo in p.photos] for p in people}
    slopes = [realism.spectrum_slope(c) for p in people for c in chips[p.name]]
    out: dict[str, Any] = {"photos": {"spectrum_slope": float(np.mean(slopes))}, "methods": {}}
    for method in result.methods:
        each = {
            p.name: realism.measures(method.images[p.name], chips[p.name])
            for p in people
            if p.name in method.images
        }
        if not each:
            continue
        differences = [m["ita_difference"] for m in each.values()]
        differences = [d for d in differences if d is not None]
        out["methods"][method.name] = {
            "ita_difference": float(np.mean(differences)) if differences else None,
            "people_in_colour": len(differences),
            "spectrum_slope": float(np.mean([m["spectrum_slope"] for m in each.values()])),
            "per_person": each,
        }
    return out


def realism_table(data: dict[str, Any]) -> list[str]:
    """The lines of the realism table of :func:`record`'s data (none before it had one)."""
    found = data.get("realism")
    if not found or not found["methods"]:
        return []
    rows = [
        [
            name,
            _num(m["ita_difference"], ".1f"),
            str(m["people_in_colour"]),
            _num(m["spectrum_slope"], ".2f"),
        ]
        for name, m in found["methods"].items()
    ]
    rows.append(["the people's photos", "-", "-", _num(found["photos"]["spectrum_slope"], ".2f")])
    columns = ["images", "skin tone: ITA difference (deg)", "people in colour", "spectrum slope"]
    return ["", *markdown(columns, rows)]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pct(value: float | None) -> str:
    return "-" if _missing(value) else f"{value:.0%}"


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if _missing(value) else format(value, fmt)


def accepted(scores: list[float], thresholds: np.ndarray) -> np.ndarray:
    """The share of ``scores`` at or above each threshold."""
    values = np.sort(np.asarray(scores, np.float64))
    return 1 - np.searchsorted(values, thresholds, side="left") / len(values)


def tables(data: dict[str, Any]) -> str:
    """The markdown tables of :func:`record`'s data: the real photos, then the attacks."""
    rates = [r for r in attack.RATES if any(f"threshold@{r}" in j for j in data["judges"])]
    lines = [
        f"Attack on {data['attacked']} templates of {len(data['people'])} people of "
        f"{data['collection']}" + ("" if data["type2"] else " (one photo each: type I only)"),
        "",
    ]
    judged = []
    for j in data["judges"]:
        cells = [j["judge"], str(j["impostor_pairs"]), str(j["genuine_pairs"])]
        for r in rates:
            cells += [_num(j.get(f"threshold@{r}")), _pct(j.get(f"tar@{r}"))]
        judged.append([*cells, _num(j["mean_genuine"]), _num(j["mean_impostor"])])
    columns = ["judge", "impostor pairs", "genuine pairs"]
    for r in rates:
        columns += [f"threshold @FMR {r}", f"TAR @{r}"]
    lines += markdown([*columns, "mean genuine", "mean impostor"], judged)
    for j in data["judges"]:
        if j["thresholds_from"] != "collection":
            lines += [
                "",
                f"{j['judge']}'s thresholds: its own calibration ({j['thresholds_from']}); "
                "the collection has one person",
            ]
    methods = []
    for row in data["methods"]:
        cells = [row["method"], row["judge"], row["setting"], str(row["people"])]
        cells += [_pct(row.get(f"sar1@{r}")) for r in rates]
        cells += [_pct(row.get(f"sar2@{r}")) for r in rates]
        cells += [_num(row["mean_type1"]), _num(row["mean_type2"]), _pct(row["face_rate"])]
        methods.append([*cells, _num(row["seconds_per_template"], ".2f")])
    columns = [
        "method", "judge", "setting", "people",
        *(f"SAR I @{r}" for r in rates), *(f"SAR II @{r}" for r in rates),
        "mean cos I", "mean cos II", "face found", "s / template",
    ]  # fmt: skip
    lines += ["", *markdown(columns, methods)]
    lines += realism_table(data)
    for name, source in data.get("generators", {}).items():
        lines += ["", f"{name}: `{source}`"]
    if data["failed_people"]:
        lines += ["", f"Failed attacks ({len(data['failed_people'])}):", ""]
        lines += [f"- {name}: {why}" for name, why in sorted(data["failed_people"].items())]
    skipped = data["skipped_photos"]
    if skipped:
        lines += ["", f"Skipped photos ({len(skipped)}):", ""]
        lines += [f"- {Path(path).name}: {why}" for path, why in sorted(skipped.items())]
    return "\n".join(lines) + "\n"


def roc_figure(result: AttackResult):
    """Per judge: the share accepted against the false-match rate of the threshold, for
    real genuine pairs and for each method's type I and type II comparisons."""
    from matplotlib.figure import Figure

    judges = result.judges
    fig = Figure(figsize=(4.2 * len(judges), 3.8), dpi=90)
    for index, judge in enumerate(judges):
        ax = fig.add_subplot(1, len(judges), index + 1)
        if not len(judge.impostor):
            ax.set_title(f"{judge.name}: no impostor pairs", fontsize=10)
            continue
        impostor = np.sort(judge.impostor)[::-1]
        fmr = np.arange(1, len(impostor) + 1) / len(impostor)
        # accepting at or above the k-th highest impostor score: a false-match rate of k/n
        if len(judge.genuine):
            ax.plot(fmr, accepted(judge.genuine, impostor), color="black", label="real photos")
        for method, colour in zip(result.methods, ("C0", "C1", "C2", "C3", "C4"), strict=False):
            entries = [s.get(judge.name, {}) for s in method.scores.values()]
            type1 = [e["type1"] for e in entries if "type1" in e]
            type2 = [c for e in entries for c in e.get("type2", [])]
            if type1:
                ax.plot(fmr, accepted(type1, impostor), color=colour, label=f"{method.name} I")
            if type2:
                ax.plot(
                    fmr, accepted(type2, impostor), color=colour, ls="--", label=f"{method.name} II"
                )
        for rate in judge.thresholds:
            ax.axvline(float(rate), color="gray", lw=0.6, ls=":")
        setting = "white-box" if judge.name == result.attacked else "transfer"
        ax.set(xscale="log", xlabel="false-match rate", ylabel="accepted", ylim=(0, 1.02))
        ax.set_title(f"{judge.name} ({setting})", fontsize=10)
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig


#: people shown in ``people.jpg``, the overview
OVERVIEW = 8


def _chip(result: AttackResult, photo: Path) -> np.ndarray:
    return faces.chip(result.model, faces.read_photo(photo), True, str(photo))[0]


def write_lineup(result: AttackResult, folder: Path) -> None:
    """Blind line-up sheets of each method that has an image of every person with another
    photo (see ``facerecon.evaluation.lineup``): people grouped at random into
    ``folder/lineup``, and with their look-alikes (by a transfer judge, else the attacked
    model, on their other photos) into ``folder/lineup-lookalike``."""
    chosen = [i for i, p in enumerate(result.collection.people) if len(p.photos) > 1]
    people = [result.collection.people[i] for i in chosen]
    names = [p.name for p in people]
    images = {m.name: m.images for m in result.methods if all(n in m.images for n in names)}
    if len(people) < 2 or not images:
        return
    photos = {p.name: _chip(result, p.photos[1]) for p in people}
    seed = result.spec.seed
    lineup.write(folder / "lineup", names, images, photos, seed, run_id=result.run_id)
    judges = [j for j in result.references if j != result.attacked] or [result.attacked]
    others = np.stack([result.references[judges[0]][i].type2[0] for i in chosen])
    lookalike = folder / "lineup-lookalike"
    grouping = f"with look-alikes (by {judges[0]}'s cosine between their other photos)"
    similarity = others @ others.T
    lineup.write(lookalike, names, images, photos, seed, similarity, grouping, result.run_id)


def people_figure(result: AttackResult, people: list[attack.Person]):
    """Rows of people: the template's photo, another photo, each method's image."""
    rows = []
    for person in people:
        chips = [_chip(result, photo) for photo in person.photos[:2]]
        blank = np.full_like(chips[0], 0.85)  # no other photo, or no stored image
        images = chips[:1] + [chips[1] if len(chips) > 1 else blank]
        images += [m.images.get(person.name, blank) for m in result.methods]
        rows.append((person.name, images))
    titles = ["template's photo", "another photo"] + [m.name for m in result.methods]
    return labelled_grid(rows, titles)


#: What :func:`write` puts at the top of its folder.
REPORT_FILES = ("attack.json", "attack.md", "roc.png", "people.jpg", "people", "lineup")


def check_folder(folder: Path, spec: str, collection: str) -> None:
    """Refuse a folder that holds the report of another evaluation: its ``attack.json``
    names another spec or collection, or there are report files without a readable
    ``attack.json``. The same spec on the same collection writes its report again."""
    folder = Path(folder)
    found = [name for name in REPORT_FILES if (folder / name).exists()]
    if not found:
        return
    try:
        data = json.loads((folder / "attack.json").read_text(encoding="utf-8"))
        theirs = (data["spec"], data["collection"])
    except (OSError, ValueError, KeyError, TypeError):
        theirs = None  # not written by an evaluation, or not readable: not ours either
    if theirs == (spec, collection):
        return
    whose = (
        f"(spec {shown(theirs[0], 80)} on {shown(theirs[1], 80)})"
        if theirs
        else f"({', '.join(found)}, no attack.json naming its spec)"
    )
    raise FaceReconError(
        f"{folder}: holds the report of another evaluation {whose}; give -o another "
        "folder, or move that one away"
    )


def write(result: AttackResult, folder: Path) -> dict[str, Any]:
    """Write the evaluation into ``folder`` (and its MLflow run, if tracked); its data.
    A folder with another evaluation's report is refused (:func:`check_folder`)."""
    import matplotlib.pyplot as plt

    check_folder(folder, result.spec.name, result.collection.source)
    folder.mkdir(parents=True, exist_ok=True)
    data = record(result)
    (folder / "attack.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    (folder / "attack.md").write_text(tables(data))
    roc_figure(result).savefig(folder / "roc.png")
    if result.spec.tracking.images != "none":
        (folder / "people").mkdir(exist_ok=True)
        people = result.collection.people
        for person in people:
            fig = people_figure(result, [person])
            path = folder / "people" / f"{safe_key(person.name)}.jpg"
            fig.savefig(path, pil_kwargs={"quality": 85})
            plt.close(fig)
        fig = people_figure(result, people[:OVERVIEW])
        fig.savefig(folder / "people.jpg", pil_kwargs={"quality": 85})
        plt.close(fig)
        write_lineup(result, folder)
    if result.run_id is not None:
        _log(result, folder, data)
    return data


def _log(result: AttackResult, folder: Path, data: dict[str, Any]) -> None:
    """The folder as the run's artifacts; SAR and TAR as metrics
    (``attack/<method>/<judge>/sar1_fmr1e-2``, ``attack/real/<judge>/tar_fmr1e-2``)."""
    from facerecon.tracking import runs
    from facerecon.tracking.store import client as tracking_client

    client = tracking_client()
    client.log_artifacts(result.run_id, str(folder))
    metrics = {}
    rows = [(safe_key(r["method"].split(" (")[0]), r["judge"], r) for r in data["methods"]]
    rows += [("real", j["judge"], j) for j in data["judges"]]
    for method, judge, row in rows:
        for key, value in row.items():
            if key.startswith(("sar", "tar@")) and value is not None and not math.isnan(value):
                name = f"attack/{method}/{judge}/{key.replace('@', '_fmr')}"
                metrics[name] = value
    runs.log_metrics(client, result.run_id, runs.rows(metrics))
