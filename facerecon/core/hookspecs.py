"""The hooks a facerecon plugin may implement.

Registration hooks follow the ``register_<kind>(register)`` pattern: the host passes a
``register`` callable and the plugin calls it once per class it provides. Lifecycle hooks
receive one :class:`facerecon.core.context.RunContext` each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from facerecon.core.context import RunContext, SweepContext, VariantOutcome
    from facerecon.core.kinds import StepInfo

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
def register_transforms(register: Callable[[type], None]) -> None:
    """Register random image transforms (subclasses of :class:`facerecon.Transform`).

    A transform maps an (N, H, W, 3) batch in [0, 1] to one of the same shape, draws its
    randomness only from the seed it is given, and is differentiable in the images.
    """


@hookspec
def register_parameterizations(register: Callable[[type], None]) -> None:
    """Register image parameterizations (subclasses of :class:`facerecon.Parameterization`).

    ``to_images`` must stay within [0, 1], and ``to_images(from_images(x))`` must give back
    ``x`` (up to float error) for any x in [0, 1], so every init kind works; a
    parameterization that cannot make every image (a generator) gives its closest image
    instead, and says so in its docstring.
    """


@hookspec
def register_detectors(register: Callable[[type], None]) -> None:
    """Register face detectors (subclasses of :class:`facerecon.Detector`) that judge
    whether a reconstruction shows a face; a detector must not be a face recognizer."""


@hookspec
def before_run(context: RunContext) -> None:
    """Called once after the spec is validated and the batch is built, before step 0; a
    tracker sets ``context.run_id`` here."""


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
    runs; a tracker sets ``sweep.run_id`` (unless it is given, to resume) to make the
    variants its child runs."""


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
    "register_transforms": "transform",
    "register_parameterizations": "parameterization",
    "register_detectors": "detector",
}

__all__ = ["hookimpl", "hookspec", "HOOK_KINDS"]
