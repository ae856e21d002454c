"""``adam``: Adam on the pixels (Kingma & Ba), as in the paper's iterative experiments."""

from __future__ import annotations

import keras
from pydantic import Field

from facerecon import hookimpl
from facerecon.engine.iterative import IterativeParams, IterativeSolver


class Adam(IterativeSolver):
    """Adam with the usual moment decay rates."""

    name = "adam"

    class Params(IterativeParams):
        beta_1: float = Field(0.9, ge=0, lt=1)
        beta_2: float = Field(0.999, ge=0, lt=1)

    def optimizer(self) -> keras.optimizers.Optimizer:
        p = self.params
        return keras.optimizers.Adam(learning_rate=p.lr, beta_1=p.beta_1, beta_2=p.beta_2)


@hookimpl
def register_solvers(register):
    register(Adam)
