"""A solver that fails on purpose after a few steps: a run that starts, logs, then raises
(or, with ``crash``, takes its whole worker process down without ending the run).

Reached through an entry point in the worker tests (Ray workers are separate processes).
"""

from __future__ import annotations

import os

from pydantic import Field

from facerecon import hookimpl
from facerecon_plugins.solvers.adam import Adam


class Exploding(Adam):
    """Adam that raises RuntimeError (or exits the process) once step ``fail_at`` is reported."""

    name = "exploding"

    class Params(Adam.Params):
        fail_at: int = Field(2, ge=0)
        crash: bool = False

    def solve(self, objective, init, on_step):
        def step_then_fail(step):
            on_step(step)
            if step.step >= self.params.fail_at:
                if self.params.crash:
                    os._exit(3)  # no exception, no on_error: as if the worker were killed
                raise RuntimeError(f"deliberate failure at step {step.step}")

        return super().solve(objective, init, step_then_fail)


@hookimpl
def register_solvers(register):
    register(Exploding)
