"""The generator recipe against today's (fft) recipe on the same people, from the attack
evaluations' ``attack.json`` files:

    python experiments/photoreal/compare.py

reads docs/gallery/attack/attack.json (the fft recipe on 41 people of ORL + Obama + radar),
docs/gallery/photoreal/attack-stylegan/attack.json (the generator recipe on the first 12 of
them), and the two builtin:radar evaluations under docs/gallery/photoreal/ (12 people in
colour, one photo each), and writes docs/gallery/photoreal/comparison.{md,json}: success
rates, mean cosines, skin tone and texture per recipe, restricted to the people both have.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
GALLERY = ROOT / "docs" / "gallery"
RATES = ("1e-2", "1e-3", "1e-4")
SETS = {
    "ORL + Obama (type I and II)": {
        "fft (quickstart recipe)": GALLERY / "attack" / "attack.json",
        "stylegan (generator recipe)": GALLERY / "photoreal" / "attack-stylegan" / "attack.json",
    },
    "radar, in colour (type I)": {
        "fft (quickstart recipe)": GALLERY / "photoreal" / "radar-fft" / "attack.json",
        "stylegan (generator recipe)": GALLERY / "photoreal" / "radar-stylegan" / "attack.json",
    },
}
ITERATIVE = "iterative (adam)"


def _method_row(data: dict, people: list[str], judge: str) -> dict:
    """SAR and mean cosines of the iterative method for ``people``, judged by ``judge`` at
    the evaluation's own thresholds."""
    thresholds = next(j for j in data["judges"] if j["judge"] == judge)
    scores = [data["per_person"][ITERATIVE][p][judge] for p in people]
    row: dict = {"people": len(people)}
    type2 = [c for s in scores for c in s.get("type2", [])]
    for rate in RATES:
        t = thresholds.get(f"threshold@{rate}")
        if t is None:
            continue
        row[f"sar1@{rate}"] = float(np.mean([s["type1"] >= t for s in scores]))
        if type2:
            row[f"sar2@{rate}"] = float(np.mean([c >= t for c in type2]))
    row["mean_type1"] = float(np.mean([s["type1"] for s in scores]))
    row["mean_type2"] = float(np.mean(type2)) if type2 else None
    return row


def _realism(data: dict, people: list[str]) -> dict:
    found = data.get("realism", {}).get("methods", {}).get(ITERATIVE)
    if not found:
        return {}
    each = [found["per_person"][p] for p in people if p in found["per_person"]]
    differences = [m["ita_difference"] for m in each if m["ita_difference"] is not None]
    return {
        "ita_difference": float(np.mean(differences)) if differences else None,
        "people_in_colour": len(differences),
        "spectrum_slope": float(np.mean([m["spectrum_slope"] for m in each])),
        "photos_spectrum_slope": data["realism"]["photos"]["spectrum_slope"],
    }


def _seconds(data: dict) -> float | None:
    rows = [r for r in data["methods"] if r["method"] == ITERATIVE]
    return rows[0]["seconds_per_template"] if rows else None


def compare() -> dict:
    out: dict = {}
    for name, recipes in SETS.items():
        loaded = {r: json.loads(p.read_text()) for r, p in recipes.items() if p.is_file()}
        if len(loaded) < 2:
            continue
        people = sorted(set.intersection(*(set(d["people"]) for d in loaded.values())))
        judges = [j["judge"] for j in next(iter(loaded.values()))["judges"]]
        out[name] = {
            recipe: {
                "judges": {j: _method_row(d, people, j) for j in judges},
                "realism": _realism(d, people),
                "seconds_per_template": _seconds(d),
                "source": str(recipes[recipe].relative_to(ROOT)),
            }
            for recipe, d in loaded.items()
        }
    return out


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _num(v, fmt=".3f") -> str:
    return "-" if v is None else format(v, fmt)


def markdown(found: dict) -> str:
    lines = []
    for name, recipes in found.items():
        people = next(iter(recipes.values()))["judges"]
        count = next(iter(people.values()))["people"]
        lines += [f"## {name}: {count} people", ""]
        lines += [
            "| recipe | judge | SAR I @1e-2 / 1e-3 / 1e-4 | SAR II @1e-2 / 1e-3 / 1e-4 "
            "| mean cos I / II | skin tone: ITA difference (deg) | spectrum slope (photos) "
            "| s / template |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for recipe, r in recipes.items():
            real = r["realism"]
            for judge, row in r["judges"].items():
                sar1 = " / ".join(_pct(row.get(f"sar1@{x}")) for x in RATES)
                sar2 = " / ".join(_pct(row.get(f"sar2@{x}")) for x in RATES)
                lines.append(
                    f"| {recipe} | {judge} | {sar1} | {sar2} | {_num(row['mean_type1'])} / "
                    f"{_num(row['mean_type2'])} | {_num(real.get('ita_difference'), '.1f')} "
                    f"| {_num(real.get('spectrum_slope'), '.2f')} "
                    f"({_num(real.get('photos_spectrum_slope'), '.2f')}) "
                    f"| {_num(r['seconds_per_template'], '.1f')} |"
                )
        lines += ["", "Sources: " + ", ".join(f"`{r['source']}`" for r in recipes.values()), ""]
    return "\n".join(lines)


def main() -> None:
    found = compare()
    folder = GALLERY / "photoreal"
    (folder / "comparison.json").write_text(json.dumps(found, indent=1) + "\n")
    (folder / "comparison.md").write_text(markdown(found))
    print(markdown(found))


if __name__ == "__main__":
    main()
