"""The ``feedforward`` solver plugin: a generator trained on the objective (paper, Sec. 4).

``generator`` (the two networks of Fig. 3), ``sampling`` (random training embeddings),
``training`` (the compiled training step and loop), ``checkpoint`` (resuming), ``solver``
(the plugin class), ``store`` and ``tracking`` (MLflow: the model artifact, GIFs,
evaluation runs), ``evaluation`` (Table 1, Fig. 10), ``frames`` (a stand-in clip).
"""

from __future__ import annotations

from collections.abc import Callable

from facerecon.core.hookspecs import hookimpl

from .solver import FeedForward
from .tracking import after_run


@hookimpl
def register_solvers(register: Callable[[type], None]) -> None:
    """Provide :class:`FeedForward`."""
    register(FeedForward)


__all__ = ["FeedForward", "after_run", "register_solvers"]
