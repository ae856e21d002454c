"""Side by side, from the MLflow store the evaluations ran in: each person's photo, today's
(fft) reconstruction, the generator recipe's chip and the frame it was cut from.

    python experiments/photoreal/figure.py [--people 6] [--set radar|attack]

writes docs/gallery/photoreal/<set>-side-by-side.jpg from the kept images of the child runs
of the experiments ``attack`` (fft recipe) and ``photoreal-attack`` (generator recipe).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlflow
import numpy as np
from PIL import Image

from facerecon.faces.panels import labelled_grid

ROOT = Path(__file__).resolve().parents[2]
GALLERY = ROOT / "docs" / "gallery" / "photoreal"
SETS = {"radar": "radar-stylegan", "attack": "attack-stylegan"}
GAP = 4  # the cell gap of a run's final.png (facerecon.faces.panels.grid)


def _kept(client: mlflow.MlflowClient, experiment: str, person: str, path: str) -> np.ndarray:
    """The image ``path`` of the newest finished run for ``person`` in ``experiment``."""
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs(
        [found.experiment_id],
        f"attributes.run_name = '{experiment} [{person}]' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    local = client.download_artifacts(runs[0].info.run_id, path)
    return np.asarray(Image.open(local).convert("RGB"), np.float32) / 255


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=6)
    parser.add_argument("--set", choices=sorted(SETS), default="radar")
    args = parser.parse_args()
    data = json.loads((GALLERY / SETS[args.set] / "attack.json").read_text())
    client = mlflow.MlflowClient()
    rows = []
    for person in data["people"][: args.people]:
        fft = _kept(client, "attack", person, "kept/target_0.png")
        chip = _kept(client, "photoreal-attack", person, "kept/target_0.png")
        frame = _kept(client, "photoreal-attack", person, "frames/target_0.png")
        # final.png's first cell is the target's photo as the model saw it (grid gap 4)
        final = _kept(client, "photoreal-attack", person, "final.png")
        size = chip.shape[0]
        photo = final[GAP : GAP + size, GAP : GAP + size]
        rows.append((person, [photo, fft, chip, frame]))
    titles = ["template's photo", "today's recipe (fft)", "generator recipe (chip)", "its frame"]
    figure = labelled_grid(rows, titles)
    out = GALLERY / f"{args.set}-side-by-side.jpg"
    figure.savefig(out, pil_kwargs={"quality": 88})
    print(out)


if __name__ == "__main__":
    main()
