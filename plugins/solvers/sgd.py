"""``sgd``: gradient descent with momentum on the pixels."""

from __future__ import annotations

import keras
from pydantic import Field

from facerecon import hookimpl
from facerecon.engine.iterative import IterativeParams, IterativeSolver


class SGD(IterativeSolver):
    """Stochastic gradient descent with (optionally Nesterov) momentum."""

    name = "sgd"

    class Params(IterativeParams):
        momentum: float = Field(0.9, ge=0, lt=1)
        nesterov: bool = False

    def optimizer(self) -> keras.optimizers.Optimizer:
        p = self.params
        return keras.optimizers.SGD(learning_rate=p.lr, momentum=p.momentum, nesterov=p.nesterov)


@hookimpl
def register_solvers(register):
    register(SGD)
