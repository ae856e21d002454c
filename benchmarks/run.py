"""facerecon benchmarks: throughput against baselines measured in the same run.

    python benchmarks/run.py [--models dlib-resnet facenet] [--out benchmarks/results.json]
    python benchmarks/run.py --tracking-only [--tracking-pairs 15]   # tracking and cold start
    python benchmarks/run.py --generator-only   # identity generator vs iterative steps
    python benchmarks/run.py --stylegan --steps 8   # the stylegan recipe's step vs fft's

Every speed is reported next to a baseline timed in the same process, because this machine
is shared and noisy: the compiled step against (a) a plain eager GradientTape loop doing
the same work and (b) the roofline bound (matmul throughput / the model's FLOPs per image);
the feed-forward generator's one pass and its training step against the iterative solver's
compiled step at the same batch; tracking on against tracking off (whole ``api.run`` calls,
interleaved); and the quickstart's whole process against its import and model-loading
parts. facenet and the generator are timed with random weights (the architecture is what
costs time). Medians of repeated timings throughout; the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
from rich.console import Console
from rich.table import Table

from facerecon import api
from facerecon.core.schedules import Schedule
from facerecon.engine.objective import Objective, Term, Transforms
from facerecon_plugins.metrics.l2 import L2
from facerecon_plugins.parameterizations.fft import Fourier
from facerecon_plugins.parameterizations.pixels import Pixels
from facerecon_plugins.regularizers.tv import TotalVariation
from facerecon_plugins.solvers.adam import Adam
from facerecon_plugins.transforms.jitter import Jitter
from facerecon_plugins.transforms.mirror import Mirror
from facerecon_plugins.transforms.scale import Scale

ROOT = Path(__file__).resolve().parent.parent
# Two batches large enough that activations, not start-up (facenet's weights file peaks at
# about 1.8 GiB), set the peak, so the slope between them is the per-image cost.
MEMORY_BATCHES = {"dlib-resnet": (32, 128), "facenet": (64, 128)}
console = Console()


def timings(fn, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_time(fn, repeats: int, warmup: int = 2) -> float:
    return statistics.median(timings(fn, repeats, warmup))


def matmul_gflops(n: int = 2048) -> float:
    """The machine's best float32 matmul rate: the roofline's peak (best of 20, not median,
    since a peak is what the bound is about and the machine is shared)."""
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    mm = tf.function(lambda: tf.matmul(a, b))
    return 2 * n**3 / min(timings(lambda: mm().numpy(), 20)) / 1e9


def model_for(name: str):
    model = api.model(name)
    if name == "facenet":  # random weights: only the architecture's cost matters here
        from facerecon_plugins.models.facenet import build_network

        model._network = build_network(model.embedding_size)
    return model


def fwd_bwd_flops(model) -> float:
    from tensorflow.python.profiler import model_analyzer, option_builder

    net = model.network()
    x = tf.Variable(tf.zeros((1, model.input_size, model.input_size, 3)))

    def fb():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(net(x, training=False))
        return tape.gradient(loss, x)

    graph = tf.function(fb).get_concrete_function().graph
    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return model_analyzer.profile(graph, options=opts).total_float_ops


def objective_for(
    model, batch: int, transforms: Transforms | None = None, parameterization=None
) -> Objective:
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(batch, model.embedding_size)).astype(np.float32)
    terms = [Term("tv", TotalVariation(), 0.01, Schedule())]
    return Objective(
        model,
        L2(),
        terms,
        targets,
        np.zeros(batch, bool),
        parameterization or Pixels(),
        transforms,
    )


def compiled_step_seconds(model, batch: int, steps: int, **objective: Any) -> float:
    """Median seconds per step of facerecon's compiled iterative step (Adam) at ``batch``,
    after the first steps (tracing, warm-up); ``objective`` goes to :func:`objective_for`."""
    objective = objective_for(model, batch, **objective)
    init = np.full((batch, model.input_size, model.input_size, 3), 0.5, np.float32)
    stamps: list[float] = []
    Adam(Adam.Params(steps=max(steps, 6), lr=0.01)).solve(
        objective, init, lambda info: stamps.append(time.perf_counter())
    )
    return float(np.median(np.diff(stamps[3:])))


def transforms_cost(model, steps: int, rounds: int = 3) -> dict[str, float]:
    """Seconds per step of the quickstart's set-up (one image, fft, K draws of scale, jitter
    and mirror) against K = 1 and against the paper's (pixels, no transforms), each the
    median of ``rounds`` interleaved measurements in this process."""
    chain = [Scale(), Jitter(), Mirror()]
    setups = {
        "pixels, no transforms": {},
        "fft, no transforms": {"parameterization": Fourier()},
        "fft, K=1": {"parameterization": Fourier(), "transforms": Transforms(chain, 1)},
        "fft, K=4": {"parameterization": Fourier(), "transforms": Transforms(chain, 4)},
    }
    seconds: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(rounds):
        for name, setup in setups.items():
            seconds[name].append(compiled_step_seconds(model, 1, steps, **setup))
    out = {f"{name} s/step": float(np.median(v)) for name, v in seconds.items()}
    base = out["fft, K=1 s/step"]
    out["K=4 vs K=1"] = out["fft, K=4 s/step"] / base
    out["fft vs pixels"] = out["fft, no transforms s/step"] / out["pixels, no transforms s/step"]
    return out


def stylegan_cost(model, steps: int, rounds: int = 3, batches: tuple[int, ...] = (1, 4)) -> dict:
    """Seconds per step of the stylegan recipe (MobileStyleGAN's w, the synthesis at 1024)
    against the quickstart's fft recipe (K=4 draws), at each batch, interleaved ``rounds``
    times in this process; and the synthesis alone (forward; forward and backward)."""
    from facerecon.core.kinds import PrepareContext
    from facerecon_plugins.parameterizations.stylegan import StyleGAN

    generator = StyleGAN()
    generator.prepare(PrepareContext(model, None, None, None))
    chain = [Scale(), Jitter(), Mirror()]
    setups = {
        "fft, K=4": {"parameterization": Fourier(), "transforms": Transforms(chain, 4)},
        "stylegan w, no transforms": {"parameterization": generator},
        "stylegan w, K=4": {"parameterization": generator, "transforms": Transforms(chain, 4)},
    }
    seconds: dict[str, list[float]] = {f"{name}, batch {b}": [] for name in setups for b in batches}
    for _ in range(rounds):
        for name, setup in setups.items():
            for b in batches:
                step = compiled_step_seconds(model, b, steps, **setup)
                seconds[f"{name}, batch {b}"].append(step)
    out: dict[str, Any] = {f"{k} s/step": float(np.median(v)) for k, v in seconds.items()}
    for b in batches:
        stylegan = out[f"stylegan w, no transforms, batch {b} s/step"]
        out[f"stylegan vs fft, batch {b}"] = stylegan / out[f"fft, K=4, batch {b} s/step"]
    u = tf.Variable(tf.zeros((1, 1, 512)))
    forward = tf.function(lambda: generator.frames(u))

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(generator.frames(u))
        return tape.gradient(loss, u)

    small, large = memory("dlib-resnet", 1, True), memory("dlib-resnet", 3, True)
    out["peak GiB, batch 1"], out["peak GiB, batch 3"] = small, large
    out["GiB per element"] = (large - small) / 2
    out["synthesis forward, batch 1 s"] = median_time(lambda: forward().numpy(), 5)
    out["synthesis forward and backward, batch 1 s"] = median_time(
        lambda: forward_backward().numpy(), 5
    )
    return out


def latent_generator_cost(model, steps: int, rounds: int = 3, batch: int = 32) -> dict:
    """One-pass generation of ``batch`` templates by the shipped latent generator
    (builtin:latent-dlib: template -> w -> MobileStyleGAN, rendered 4 at a time) against
    one compiled iterative step of the generator recipe on the same templates. A step at
    batch 32 does not fit in memory here (2.2 GiB per element); it is timed at batch 4 and
    counted 8 times. Medians of ``rounds`` interleaved measurements in this process."""
    from facerecon_plugins.solvers.feedforward import store

    generator = store.load("builtin:latent-dlib")
    generator.check_model(model)
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(batch, model.embedding_size)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    iterative = {"parameterization": generator.renderer}
    small = 4
    seconds: dict[str, list[float]] = {"one pass": [], "iterative step": []}
    for _ in range(rounds):
        seconds["one pass"].append(median_time(lambda: generator.generate(embeddings), 1, 1))
        step = compiled_step_seconds(model, small, steps, **iterative)
        seconds["iterative step"].append(step * batch / small)
    out = {f"{name} s (batch {batch})": float(np.median(v)) for name, v in seconds.items()}
    out["iterative step / one pass"] = (
        out[f"iterative step s (batch {batch})"] / out[f"one pass s (batch {batch})"]
    )
    return out


def identity_generator_cost(model, steps: int, rounds: int = 3, batch: int = 32) -> dict:
    """One-pass generation at ``batch`` by the identity generator's architecture (guided,
    32 filters: generator-1 of experiments/feedforward/identity-generators-dlib.yaml)
    against one compiled iterative step of the quickstart's recipe (fft, 4 draws) and of
    the paper's (pixels, TV) on the same batch; medians of ``rounds`` interleaved
    measurements in this process."""
    from facerecon_plugins.solvers.feedforward.generator import (
        Generator,
        GeneratorConfig,
        GeneratorParams,
    )

    params = GeneratorParams(kind="guided", filters=32, guide_filters=16)
    generator = Generator.build(GeneratorConfig.of(params, model), seed=0)
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(batch, model.embedding_size)).astype(np.float32)
    guides = rng.random((batch, model.input_size, model.input_size, 3), np.float32)
    chain = [Scale(), Jitter(), Mirror()]
    recipe = {"parameterization": Fourier(), "transforms": Transforms(chain, 4)}
    seconds: dict[str, list[float]] = {"one pass": [], "quickstart step": [], "paper step": []}
    for _ in range(rounds):
        seconds["one pass"].append(
            median_time(lambda: generator.generate(embeddings, guides, batch), 5)
        )
        seconds["quickstart step"].append(compiled_step_seconds(model, batch, steps, **recipe))
        seconds["paper step"].append(compiled_step_seconds(model, batch, steps))
    out = {f"{name} s (batch {batch})": float(np.median(v)) for name, v in seconds.items()}
    one_pass = out[f"one pass s (batch {batch})"]
    out["quickstart step / one pass"] = out[f"quickstart step s (batch {batch})"] / one_pass
    out["paper step / one pass"] = out[f"paper step s (batch {batch})"] / one_pass
    return out


def step_rates(model, batch: int, steps: int) -> dict[str, float]:
    """Image-iterations per second: facerecon's compiled step vs a plain eager loop."""
    objective = objective_for(model, batch)
    init = np.full((batch, model.input_size, model.input_size, 3), 0.5, np.float32)
    ours = compiled_step_seconds(model, batch, steps)

    images = tf.Variable(init)
    optimizer = Adam(Adam.Params(lr=0.01)).optimizer()
    weights = tf.constant(objective.weights_at(0))

    def eager_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(objective(images, weights)["total"])
        optimizer.apply_gradients([(tape.gradient(loss, images), images)])
        images.assign(tf.clip_by_value(images, 0.0, 1.0))

    eager = median_time(eager_step, max(3, steps // 6))
    return {"compiled_img_per_s": batch / ours, "eager_img_per_s": batch / eager}


def feedforward_rates(
    model, filters: int = 50, train_batch: int = 16, steps: int = 8
) -> dict[str, dict[str, float]]:
    """The feed-forward generator (random init): images per second of one-pass generation
    at batch 32 and 1 against the iterative compiled step at the same batch, and training
    steps per second against the iterative step at the training batch."""
    from facerecon_plugins.solvers.feedforward.generator import (
        Generator,
        GeneratorConfig,
        GeneratorParams,
    )
    from facerecon_plugins.solvers.feedforward.sampling import EmbeddingSampler
    from facerecon_plugins.solvers.feedforward.training import Settings, Trainer

    config = GeneratorConfig.of(GeneratorParams(kind="embedding", filters=filters), model)
    generator = Generator.build(config, seed=0)
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(64, model.embedding_size)).astype(np.float32)
    out: dict[str, dict[str, float]] = {}
    for batch in (32, 1):
        count = 64 if batch > 1 else 32  # whole batches, a fraction of a second each
        seconds = median_time(
            lambda b=batch, n=count: generator.generate(embeddings[:n], batch=b), 7
        )
        iterative = compiled_step_seconds(model, batch, steps)
        out[f"generate_batch_{batch}"] = {
            "images_per_s": count / seconds,
            "iterative_img_iter_per_s": batch / iterative,
            # one generated image takes this many times less than one iteration on one image
            "vs_one_iteration": count / seconds * iterative / batch,
        }
    objective = objective_for(model, train_batch)
    sampler = EmbeddingSampler("gaussian", rng.normal(size=(64, model.embedding_size)))
    settings = Settings(steps, train_batch, 1e-3, 0, steps, steps)
    trainer = Trainer(generator, objective, sampler, settings)
    # As Trainer.run does: slots made before tracing, else every step is traced twice.
    trainer.optimizer.build(generator.network.trainable_variables)
    train = trainer._train_step(objective, None)
    weights = tf.constant(objective.weights_at(0))
    seed = tf.constant(objective.step_seed(0))
    batches = [tf.constant(sampler.sample(rng, train_batch)) for _ in range(steps + 2)]
    calls = iter(batches)
    seconds = median_time(lambda: train(next(calls), weights, seed)["total"].numpy(), steps)
    iterative = compiled_step_seconds(model, train_batch, steps)
    out[f"train_batch_{train_batch}"] = {
        "steps_per_s": 1 / seconds,
        "iterative_steps_per_s": 1 / iterative,
        "vs_iterative_step": iterative / seconds,
    }
    return out


def child(code: str) -> tuple[float, dict]:
    """Run Python code in a fresh process; its wall time and the JSON it prints last."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return time.perf_counter() - start, json.loads(out.stdout.strip().splitlines()[-1])


def solve_only(name: str, batch: int, steps: int = 2, stylegan: bool = False) -> None:
    """A few compiled steps and nothing else (for memory measurements)."""
    model = model_for(name)
    init = np.full((batch, model.input_size, model.input_size, 3), 0.5, np.float32)
    parameterization = None
    if stylegan:
        from facerecon.core.kinds import PrepareContext
        from facerecon_plugins.parameterizations.stylegan import StyleGAN

        parameterization = StyleGAN()
        parameterization.prepare(PrepareContext(model, None, None, None))
    objective = objective_for(model, batch, parameterization=parameterization)
    Adam(Adam.Params(steps=steps)).solve(objective, init, lambda info: None)


def memory(name: str, batch: int, stylegan: bool = False) -> float:
    """Peak resident memory (GiB) of a fresh process running compiled steps at ``batch``."""
    code = f"""
import json, resource, sys
sys.path.insert(0, "benchmarks")
from run import solve_only
solve_only({name!r}, {batch}, stylegan={stylegan})
print(json.dumps({{"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""
    return child(code)[1]["rss"] / 2**20


def cold_start(repeats: int) -> dict[str, float]:
    """The quickstart's whole process, tracked and not (interleaved, medians), and what
    import and model loading take of it."""
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(repeats):
        for track in (False, True) if i % 2 == 0 else (True, False):
            flags = [] if track else ["--no-track"]
            start = time.perf_counter()
            subprocess.run(
                ["facerecon", "run", "experiments/quickstart.yaml", *flags],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            times[track].append(time.perf_counter() - start)
    whole, tracked = statistics.median(times[False]), statistics.median(times[True])
    _, parts = child("""
import json, time
t0 = time.perf_counter()
import facerecon.cli, facerecon.api
t1 = time.perf_counter()
facerecon.api.model("dlib-resnet").network()
print(json.dumps({"import": t1 - t0, "model": time.perf_counter() - t1}))
""")
    return {
        "quickstart_s": whole,
        "quickstart_tracked_s": tracked,
        "tracking_overhead": tracked / whole - 1,
        "repeats": repeats,
        "import_s": parts["import"],
        "model_load_s": parts["model"],
    }


def median_ci(values: list[float]) -> tuple[float, float]:
    """A bootstrap 95% interval for the median of ``values``."""
    from scipy.stats import bootstrap

    ci = bootstrap((values,), np.median, method="percentile", random_state=0).confidence_interval
    return ci.low, ci.high


def tracking_cost(pairs: int) -> dict:
    """Whole ``api.run`` calls of the quickstart with and without MLflow tracking.

    One untracked run warms up the model and kernels; the first tracked run pays what a
    process pays once (importing mlflow, checking the store's schema) and is reported on its
    own. Then ``pairs`` pairs in alternating order: the overhead is the median of the pairs'
    ratios, since the two runs of a pair see the same machine, with a bootstrap 95% interval.
    Process CPU time is reported the same way: other tenants' load moves it less.
    """
    spec = api.validate(ROOT / "experiments" / "quickstart.yaml")[0]
    spec = spec.model_copy(
        update={"tracking": spec.tracking.model_copy(update={"experiment": "benchmarks"})}
    )
    load_at_start = os.getloadavg()
    api.run(spec, track=False)
    start = time.perf_counter()
    api.run(spec, track=True)
    first_tracked = time.perf_counter() - start
    wall: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    for i in range(pairs):
        for track in (False, True) if i % 2 == 0 else (True, False):
            start, cpu_start = time.perf_counter(), time.process_time()
            api.run(spec, track=track)
            wall[track].append(time.perf_counter() - start)
            cpu[track].append(time.process_time() - cpu_start)
    ratios = [on / off - 1 for on, off in zip(wall[True], wall[False], strict=True)]
    cpu_ratios = [on / off - 1 for on, off in zip(cpu[True], cpu[False], strict=True)]
    return {
        "pairs": pairs,
        "overhead": statistics.median(ratios),
        "overhead_95ci": median_ci(ratios),
        "cpu_overhead": statistics.median(cpu_ratios),
        "cpu_overhead_95ci": median_ci(cpu_ratios),
        "untracked_s": statistics.median(wall[False]),
        "tracked_s": statistics.median(wall[True]),
        "first_tracked_s": first_tracked,
        "pair_overheads": ratios,
        "untracked_runs_s": wall[False],
        "tracked_runs_s": wall[True],
        "load_average": [load_at_start, os.getloadavg()],
    }


def cold_start_now(args: argparse.Namespace) -> dict:
    """:func:`cold_start` with the load average it was measured under."""
    return {**cold_start(args.cold_repeats), "load_average": os.getloadavg()}


def update_results(out: Path, measure: Callable[[dict], dict]) -> None:
    """Measure some keys of ``out`` again (``measure`` gets the old results, returns the
    new keys), keep the others, and print what was measured."""
    results = json.loads(out.read_text()) if out.exists() else {}
    fresh = measure(results)
    results.update(fresh)
    out.write_text(json.dumps(results, indent=2) + "\n")
    console.print_json(json.dumps(fresh))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["dlib-resnet", "facenet"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tracking-pairs", type=int, default=15)
    parser.add_argument(
        "--tracking-only",
        action="store_true",
        help="measure only tracking's cost and the cold start; update those keys of --out",
    )
    parser.add_argument(
        "--transforms-only",
        action="store_true",
        help="measure only the cost of transforms and fft on dlib-resnet; update that key",
    )
    parser.add_argument(
        "--generator-only",
        action="store_true",
        help="measure only the identity generator's one pass against iterative steps",
    )
    parser.add_argument(
        "--cold-only",
        action="store_true",
        help="measure only the quickstart's whole process; update the cold_start key",
    )
    parser.add_argument(
        "--stylegan",
        action="store_true",
        help="only the stylegan recipe's step against the fft recipe's (batches 1 and 4)",
    )
    parser.add_argument("--cold-repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    args = parser.parse_args()
    if args.cold_only:
        update_results(Path(args.out), lambda results: {"cold_start": cold_start_now(args)})
        return
    if args.transforms_only:
        update_results(
            Path(args.out),
            lambda results: {
                "models": {
                    **results.get("models", {}),
                    "dlib-resnet": {
                        **results.get("models", {}).get("dlib-resnet", {}),
                        "transforms": transforms_cost(model_for("dlib-resnet"), args.steps),
                    },
                }
            },
        )
        return
    if args.generator_only:
        update_results(
            Path(args.out),
            lambda results: {
                "models": {
                    **results.get("models", {}),
                    "dlib-resnet": {
                        **results.get("models", {}).get("dlib-resnet", {}),
                        "identity_generator": identity_generator_cost(
                            model_for("dlib-resnet"), args.steps
                        ),
                    },
                }
            },
        )
        return
    if args.stylegan:
        update_results(
            Path(args.out),
            lambda results: {
                "stylegan": {
                    "load_average_at_start": os.getloadavg(),
                    "dlib-resnet": stylegan_cost(model_for("dlib-resnet"), args.steps),
                    "latent_generator": latent_generator_cost(model_for("dlib-resnet"), args.steps),
                    "load_average_at_end": os.getloadavg(),
                }
            },
        )
        return
    if args.tracking_only:
        update_results(
            Path(args.out),
            lambda results: {
                "tracking": tracking_cost(args.tracking_pairs),
                "cold_start": cold_start_now(args),
            },
        )
        return

    results: dict = {
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
        "models": {},
    }
    results["machine"]["matmul_gflops"] = peak = matmul_gflops()
    for name in args.models:
        model = model_for(name)
        flops = fwd_bwd_flops(model)
        entry = {"fwd_bwd_gflop_per_image": flops / 1e9, "roofline_img_per_s": peak * 1e9 / flops}
        for batch in (1, 8):
            rates = step_rates(model, batch, args.steps)
            rates["vs_eager"] = rates["compiled_img_per_s"] / rates["eager_img_per_s"]
            rates["vs_roofline"] = rates["compiled_img_per_s"] / entry["roofline_img_per_s"]
            entry[f"batch_{batch}"] = rates
        # Below a few dozen images the peak is set by start-up, not by the batch: measure
        # at two large batches and extrapolate linearly to 8 GiB.
        small, large = MEMORY_BATCHES[name]
        rss_small, rss_large = memory(name, small), memory(name, large)
        per_image = max((rss_large - rss_small) / (large - small), 1e-4)
        entry["peak_rss_gib"] = {f"batch_{small}": rss_small, f"batch_{large}": rss_large}
        entry["gib_per_image"] = per_image
        entry["largest_batch_in_8gib_estimate"] = int(large + (8 - rss_large) / per_image)
        if name == "dlib-resnet":
            entry["feedforward"] = feedforward_rates(model)
            entry["transforms"] = transforms_cost(model, args.steps)
            entry["identity_generator"] = identity_generator_cost(model, args.steps)
        results["models"][name] = entry
    results["tracking"] = tracking_cost(args.tracking_pairs)
    results["cold_start"] = cold_start(args.cold_repeats)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["peak_rss_gib_this_process"] = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )

    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    table = Table(
        "model",
        "batch",
        "compiled img/s",
        "eager img/s",
        "x eager",
        "roofline img/s",
        "of roofline",
        title=f"matmul {peak:.0f} GFLOP/s",
    )
    for name, entry in results["models"].items():
        for batch in (1, 8):
            r = entry[f"batch_{batch}"]
            table.add_row(
                name,
                str(batch),
                f"{r['compiled_img_per_s']:.2f}",
                f"{r['eager_img_per_s']:.2f}",
                f"{r['vs_eager']:.2f}",
                f"{entry['roofline_img_per_s']:.2f}",
                f"{r['vs_roofline']:.0%}",
            )
    console.print(table)
    ff = Table("model", "what", "feed-forward", "iterative step, same batch", "ratio")
    for name, entry in results["models"].items():
        for key, r in entry.get("feedforward", {}).items():
            if key.startswith("generate"):
                row = (
                    f"{r['images_per_s']:.1f} img/s",
                    f"{r['iterative_img_iter_per_s']:.2f} img-iter/s",
                )
                ff.add_row(name, key, *row, f"{r['vs_one_iteration']:.0f}")
            else:
                row = (
                    f"{r['steps_per_s']:.2f} steps/s",
                    f"{r['iterative_steps_per_s']:.2f} steps/s",
                )
                ff.add_row(name, key, *row, f"{r['vs_iterative_step']:.2f}")
    console.print(ff)
    console.print_json(json.dumps({k: v for k, v in results.items() if k != "models"}))
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
