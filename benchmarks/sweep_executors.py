"""The same 8-variant sweep, run by each executor: wall time, start-up, per-variant overhead.

    python benchmarks/sweep_executors.py [--steps 30] [--repeats 2] [--out benchmarks/sweeps.json]

The sweep is the quickstart on dlib-resnet (batch 2) over four TV weights and two seeds.
Executors: in this process (the baseline: no start-up, one model), the local executor with
two spawned workers, and Ray with two workers (a local runtime of two CPUs; its start-up
counts in its wall time; a no-op task's round trip on warm workers is timed after). Runs
alternate between executors so that load from other jobs on this shared machine hits them
alike; the medians are reported. Overhead of an executor = its wall time minus its critical
path (the busiest worker's summed variant times), per variant; model reuse = median variant
time on a worker's first variant (it builds the model) against the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from rich.console import Console
from rich.table import Table

from facerecon import api
from facerecon.core.context import SweepContext
from facerecon.engine.validation import load, validate

ROOT = Path(__file__).resolve().parent.parent
console = Console()


def sweep_spec(steps: int):
    """The quickstart as an 8-variant sweep, untracked (the store is not what is timed)."""
    raw = load(ROOT / "experiments" / "quickstart.yaml").resolved()
    raw["solver"]["steps"] = steps
    raw["tracking"]["enabled"] = False
    raw["sweep"] = {"grid": {"loss.regularizers[0].weight": [0.0, 0.01, 0.05, 0.2], "seed": [0, 1]}}
    return validate(raw, base_dir=ROOT / "experiments")


def summarize(ctx: SweepContext, wall: float) -> dict:
    per_worker: dict[str, float] = defaultdict(float)
    for o in ctx.outcomes:
        per_worker[o.worker] += o.seconds
    critical = max(per_worker.values())
    first = [o.seconds for o in ctx.outcomes if o.built_model]
    reused = [o.seconds for o in ctx.outcomes if not o.built_model]
    return {
        "wall_s": wall,
        "workers": len(per_worker),
        "critical_path_s": critical,
        "overhead_per_variant_s": (wall - critical) / len(ctx.outcomes),
        "first_variant_on_worker_s": statistics.median(first) if first else None,
        "reused_model_variant_s": statistics.median(reused) if reused else None,
    }


def run(executor: str, workers: int, steps: int) -> dict:
    spec = sweep_spec(steps)
    start = time.perf_counter()
    ctx = api.sweep(spec, executor=executor, workers=workers if executor == "local" else None)
    wall = time.perf_counter() - start
    assert all(o.status == "FINISHED" for o in ctx.outcomes), [o.error for o in ctx.outcomes]
    return summarize(ctx, wall)


def _noop() -> None:
    return None


def task_round_trip(ray) -> float:
    """Median seconds to submit a no-op task to a warm worker and get its result back."""
    noop = ray.remote(num_cpus=1)(_noop)
    ray.get([noop.remote() for _ in range(4)])  # warm the workers
    times = []
    for _ in range(50):
        start = time.perf_counter()
        ray.get(noop.remote())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "sweeps.json")
    args = parser.parse_args()
    configs = {
        "in-process": ("local", 1),
        "local, 2 workers": ("local", 2),
        "ray, 2 workers": ("ray", 2),
    }
    results: dict[str, list[dict]] = defaultdict(list)
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)
        for _ in range(args.repeats):
            for name, (executor, workers) in configs.items():
                if executor == "ray":
                    import ray

                    t = time.perf_counter()
                    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
                    init_s = time.perf_counter() - t
                    try:
                        row = run(executor, workers, args.steps)
                        row["task_round_trip_ms"] = 1000 * task_round_trip(ray)
                    finally:
                        ray.shutdown()
                    row["wall_s"] += init_s
                    row["ray_init_s"] = init_s
                else:
                    row = run(executor, workers, args.steps)
                results[name].append(row)
                console.print(name, row)
                loads.append(os.getloadavg()[0])
    table = Table(title=f"8-variant sweep, quickstart on dlib-resnet, {args.steps} steps")
    for col in (
        "executor",
        "wall s",
        "x in-process",
        "overhead/variant s",
        "first variant s",
        "reused-model variant s",
        "no-op task ms",
    ):
        table.add_column(col)
    summary = {}
    base = statistics.median(r["wall_s"] for r in results["in-process"])
    for name, rows in results.items():
        med = {
            k: statistics.median(r[k] for r in rows if r.get(k) is not None)
            for k in rows[0]
            if rows[0][k] is not None
        }
        summary[name] = {"median": med, "runs": rows}
        table.add_row(
            name,
            f"{med['wall_s']:.1f}",
            f"{base / med['wall_s']:.2f}",
            f"{med['overhead_per_variant_s']:.2f}",
            f"{med['first_variant_on_worker_s']:.1f}" if "first_variant_on_worker_s" in med else "",
            f"{med.get('reused_model_variant_s', float('nan')):.1f}",
            f"{med['task_round_trip_ms']:.2f}" if "task_round_trip_ms" in med else "",
        )
    console.print(table)
    summary["load_average_1min"] = loads
    args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
