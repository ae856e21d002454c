"""Sweeps: one spec, many variants over key paths, run as MLflow child runs of one parent.

Every variant is validated before any runs. An executor (``facerecon.engine.executors``) runs
them: in this process, in local worker processes, or as Ray tasks; every worker builds its
model once and reuses it. A variant that fails is recorded and the sweep goes on.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Sequence
from typing import Any

import pluggy

from facerecon.core.context import SweepContext, Variant, VariantOutcome
from facerecon.core.errors import FaceReconError, did_you_mean
from facerecon.core.registry import plugin_manager
from facerecon.core.spec import Spec
from facerecon.engine.executors import Executor, executor_for
from facerecon.engine.validation import validate

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


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
        hint = did_you_mean(path, _paths(data))
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
    variants, problems, first = [], [], {}
    for index, (name, overrides) in enumerate(named):
        name = name or _label(overrides)
        # Outcomes and runs are keyed by name: a repeated name would overwrite another's.
        if name in first:
            explicit = index - len(points)
            where = f"sweep.variants[{explicit}].name" if explicit >= 0 else f"variant {index}"
            problems.append(
                f"{where}: variant name {name!r} is already used by variant {first[name]}; "
                "give every variant its own `name`"
            )
            continue
        first[name] = index
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


def _run_variants(engine: Executor, context: SweepContext, pm: pluggy.PluginManager) -> None:
    outcomes: dict[str, VariantOutcome] = {}
    try:
        results = engine.run(context.variants, context.run_id)
        try:
            for outcome in results:
                outcomes[outcome.name] = outcome
                pm.hook.after_variant(sweep=context, outcome=outcome)
        finally:
            results.close()  # cancels whatever has not completed
    except BaseException as exc:
        context.error = exc
        reason = f"not completed: the sweep stopped ({type(exc).__name__})"
        for variant in context.variants:
            outcomes.setdefault(variant.name, VariantOutcome(variant.name, "KILLED", error=reason))
        raise
    finally:
        context.outcomes = [outcomes[v.name] for v in context.variants if v.name in outcomes]
        pm.hook.after_sweep(sweep=context)


def select(variants: list[Variant], names: Sequence[str]) -> list[Variant]:
    """The variants named (all when ``names`` is empty), in the sweep's order; an unknown
    name is one line with the names there are and the closest."""
    known = [v.name for v in variants]
    for name in names:
        if name not in known:
            hint = did_you_mean(name, known, cutoff=0.5)
            raise FaceReconError(
                f"--variant {name!r}: no such variant (variants: {', '.join(known)}){hint}"
            )
    return [v for v in variants if not names or v.name in names]


def run_sweep(
    spec: Spec,
    *,
    workers: int | None = None,
    executor: str = "local",
    address: str | None = None,
    pm: pluggy.PluginManager | None = None,
    variants: list[Variant] | None = None,
    only: Sequence[str] = (),
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> SweepContext:
    """Validate every variant, then run them all; returns every outcome, in variant order.

    ``variants`` replaces the spec's own ``sweep`` section (an attack evaluation makes one
    per identity); ``only`` names the variants to run (all if empty); ``run_id`` is a
    tracking run to resume as the sweep's; ``tags`` go on the sweep's tracking run.

    ``executor`` is ``local`` (this process, or ``workers`` spawned processes) or ``ray``
    (one Ray task per variant, on the cluster at ``address`` or a local Ray runtime).
    A variant that never finished because the sweep stopped is reported ``KILLED``.
    """
    pm = pm or plugin_manager()
    engine = executor_for(executor, workers=workers, address=address, spec=spec)
    variants = select(expand(spec) if variants is None else variants, only)
    with engine:
        context = SweepContext(
            spec, variants, executor=engine.description, run_id=run_id, tags=dict(tags or {})
        )
        pm.hook.before_sweep(sweep=context)
        _run_variants(engine, context, pm)
    return context
