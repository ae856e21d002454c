"""Sweeps: one spec, many variants over key paths, run as MLflow child runs of one parent.

Every variant is validated before any runs. Variants run in this process, or in local
worker processes (spawned, so each builds its model once and reuses it). A variant that
fails is recorded and the sweep goes on.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pluggy

from facerecon.errors import FaceReconError
from facerecon.plugins import plugin_manager
from facerecon.spec import Spec, validate

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass
class Variant:
    """One point of a sweep."""

    name: str
    overrides: dict[str, Any]
    spec: Spec


@dataclass
class VariantOutcome:
    """What one variant produced (kept small: it crosses process boundaries)."""

    name: str
    status: str  # FINISHED or FAILED
    run_id: str | None = None
    error: str | None = None
    distance: float | None = None
    cosine: float | None = None
    images: list[np.ndarray] = field(default_factory=list)  # kept image per target


@dataclass
class SweepContext:
    """A sweep, as lifecycle hooks see it."""

    spec: Spec
    variants: list[Variant]
    outcomes: list[VariantOutcome] = field(default_factory=list)
    #: set when the sweep itself stopped early (e.g. KeyboardInterrupt)
    error: BaseException | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def _steps(path: str) -> list[str | int]:
    parts = [
        m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _STEP.finditer(path)
    ]
    if "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".") != path:
        raise ValueError
    return parts


def _paths(data: Any, prefix: str = "") -> list[str]:
    if isinstance(data, dict):
        return [
            q
            for k, v in data.items()
            for q in [
                f"{prefix}.{k}" if prefix else k,
                *_paths(v, f"{prefix}.{k}" if prefix else k),
            ]
        ]
    if isinstance(data, list):
        return [
            q for i, v in enumerate(data) for q in [f"{prefix}[{i}]", *_paths(v, f"{prefix}[{i}]")]
        ]
    return []


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b[0].c`` in nested data; the path must already exist."""
    try:
        steps = _steps(path)
        node = data
        for step in steps[:-1]:
            node = node[step]
        last = steps[-1]
        if (
            isinstance(last, int)
            and last >= len(node)
            or isinstance(last, str)
            and (not isinstance(node, dict) or last not in node)
        ):
            raise KeyError(last)
        node[last] = value
    except (ValueError, KeyError, IndexError, TypeError):
        near = difflib.get_close_matches(path, _paths(data), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""
        raise FaceReconError(f"sweep: key path {path!r} does not exist in the spec{hint}") from None


def _label(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{path}={value}" for path, value in overrides.items())


def expand(spec: Spec) -> list[Variant]:
    """Every variant of a sweep spec, each validated; all problems reported at once."""
    sweep = spec.sweep
    if sweep is None:
        raise FaceReconError(f"{spec.name}: the spec has no `sweep` section")
    base = spec.resolved()
    base.pop("sweep")
    points = (
        [
            dict(zip(sweep.grid, combo, strict=True))
            for combo in itertools.product(*sweep.grid.values())
        ]
        if sweep.grid
        else []
    )
    named = [(None, p) for p in points] + [(v.name, v.set) for v in sweep.variants]
    variants, problems = [], []
    for index, (name, overrides) in enumerate(named):
        name = name or _label(overrides)
        data = copy.deepcopy(base)
        try:
            for path, value in overrides.items():
                set_path(data, path, value)
            data["tracking"]["run_name"] = f"{spec.name} [{name}]"
            variants.append(Variant(name, overrides, validate(data, base_dir=spec.base_dir)))
        except FaceReconError as exc:
            problems += [f"variant {index} ({name}): {line}" for line in exc.lines]
    if problems:
        raise FaceReconError(problems[0], lines=problems)
    return variants


def _run_one(variant: Variant, parent_run_id: str | None) -> VariantOutcome:
    """Run one variant (in this process or a worker) and summarize it."""
    from facerecon.runner import run

    spec = variant.spec
    spec = spec.model_copy(
        update={"tracking": spec.tracking.model_copy(update={"parent_run_id": parent_run_id})}
    )
    try:
        result = run(spec)
    except Exception as exc:
        return VariantOutcome(variant.name, "FAILED", error=f"{type(exc).__name__}: {exc}")
    best = result.best
    return VariantOutcome(
        variant.name,
        "FINISHED",
        run_id=result.run_id,
        distance=float(np.mean(result.terms["distance"][best])),
        cosine=float(np.mean(result.terms["cosine"][best])),
        images=[result.images[i] for i in best],
    )


def _worker_init() -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def run_sweep(
    spec: Spec, *, workers: int | None = None, pm: pluggy.PluginManager | None = None
) -> SweepContext:
    """Validate every variant, then run them all; returns every outcome, in variant order."""
    pm = pm or plugin_manager()
    context = SweepContext(spec, expand(spec))
    pm.hook.before_sweep(sweep=context)
    parent = context.extras.get("mlflow_run_id")
    workers = workers or spec.sweep.workers
    outcomes: dict[str, VariantOutcome] = {}
    try:
        if workers == 1:
            for variant in context.variants:
                outcome = _run_one(variant, parent)
                outcomes[variant.name] = outcome
                pm.hook.after_variant(sweep=context, outcome=outcome)
        else:
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_worker_init) as pool:
                futures = {pool.submit(_run_one, v, parent): v for v in context.variants}
                try:
                    for future in as_completed(futures):
                        outcome = future.result()
                        outcomes[outcome.name] = outcome
                        pm.hook.after_variant(sweep=context, outcome=outcome)
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    except BaseException as exc:
        context.error = exc
        raise
    finally:
        context.outcomes = [outcomes[v.name] for v in context.variants if v.name in outcomes]
        pm.hook.after_sweep(sweep=context)
    return context
