"""The hooks a facerecon plugin may implement.

Registration hooks follow the ``register_<kind>(register)`` pattern: the host passes a
``register`` callable and the plugin calls it once per class it provides. Lifecycle hooks
receive one :class:`facerecon.context.RunContext` each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from facerecon.context import RunContext, StepInfo
    from facerecon.variants import SweepContext, VariantOutcome

hookspec = pluggy.HookspecMarker("facerecon")
hookimpl = pluggy.HookimplMarker("facerecon")


@hookspec
def register_models(register: Callable[[type], None]) -> None:
    """Register face model classes (subclasses of :class:`facerecon.FaceModel`)."""


@hookspec
def register_metrics(register: Callable[[type], None]) -> None:
    """Register embedding distances (subclasses of :class:`facerecon.Metric`)."""


@hookspec
def register_regularizers(register: Callable[[type], None]) -> None:
    """Register image priors (subclasses of :class:`facerecon.Regularizer`)."""


@hookspec
def register_solvers(register: Callable[[type], None]) -> None:
    """Register solvers (subclasses of :class:`facerecon.Solver`)."""


@hookspec
def before_run(context: RunContext) -> None:
    """Called once after the spec is validated and the batch is built, before step 0."""


@hookspec
def after_step(context: RunContext, step: StepInfo) -> None:
    """Called after every solver step; must return quickly (queue slow work)."""


@hookspec
def after_run(context: RunContext) -> None:
    """Called once when the solver has finished; ``context.result`` holds the outcome."""


@hookspec
def on_error(context: RunContext, error: BaseException) -> None:
    """Called when the run fails or is interrupted; ``error`` is the exception."""


@hookspec
def before_sweep(sweep: SweepContext) -> None:
    """Called once every variant is validated and the executor is ready, before the first
    runs; a tracker may set ``sweep.extras["mlflow_run_id"]`` to make the variants its
    child runs."""


@hookspec
def after_variant(sweep: SweepContext, outcome: VariantOutcome) -> None:
    """Called in the sweep's process as each variant finishes (FINISHED or FAILED)."""


@hookspec
def after_sweep(sweep: SweepContext) -> None:
    """Called once at the end, also when the sweep stopped early (``sweep.error`` is set);
    ``sweep.outcomes`` then reports the variants that never completed as KILLED."""


HOOK_KINDS: dict[str, str] = {
    "register_models": "model",
    "register_metrics": "metric",
    "register_regularizers": "regularizer",
    "register_solvers": "solver",
}

__all__ = ["hookimpl", "hookspec", "HOOK_KINDS"]
