"""The import paths of modules that moved when the package was arranged by concern, kept
working for one release: ``import facerecon.warp`` is ``facerecon.ops.warp``, and so on
(``facerecon.tracking`` and ``facerecon.faces`` are packages now; their old names are
served by the packages themselves)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

#: old dotted path -> new one; a submodule of an old path moved with it
MOVED = {
    "facerecon.errors": "facerecon.core.errors",
    "facerecon.kinds": "facerecon.core.kinds",
    "facerecon.hookspecs": "facerecon.core.hookspecs",
    "facerecon.plugins": "facerecon.core.registry",
    "facerecon.context": "facerecon.core.context",
    "facerecon.schedules": "facerecon.core.schedules",
    "facerecon.spec": "facerecon.core.spec",
    "facerecon.cache": "facerecon.core.cache",
    "facerecon.warp": "facerecon.ops.warp",
    "facerecon.pyramid": "facerecon.ops.pyramid",
    "facerecon.metrics": "facerecon.ops.distances",
    "facerecon.tfjs": "facerecon.graphs.tfjs",
    "facerecon.datasets": "facerecon.faces.datasets",
    "facerecon.embeddings": "facerecon.faces.embeddings",
    "facerecon.neighbours": "facerecon.faces.neighbours",
    "facerecon.panels": "facerecon.faces.panels",
    "facerecon.judging": "facerecon.judges.scoring",
    "facerecon.calibration": "facerecon.judges.calibration",
    "facerecon.objective": "facerecon.engine.objective",
    "facerecon.iterative": "facerecon.engine.iterative",
    "facerecon.validation": "facerecon.engine.validation",
    "facerecon.runner": "facerecon.engine.runner",
    "facerecon.sweep": "facerecon.engine.sweep",
    "facerecon.variants": "facerecon.engine.variants",
    "facerecon.executors": "facerecon.engine.executors",
    "facerecon.attack": "facerecon.evaluation.attack",
    "facerecon.attack_sweep": "facerecon.evaluation.attack_sweep",
    "facerecon.attack_report": "facerecon.evaluation.attack_report",
    "facerecon.lineup": "facerecon.evaluation.lineup",
    "facerecon.report": "facerecon.evaluation.report",
    "facerecon_plugins.dlib_resnet": "facerecon_plugins.models.dlib_resnet",
    "facerecon_plugins.faceres": "facerecon_plugins.models.faceres",
    "facerecon_plugins.facenet": "facerecon_plugins.models.facenet",
    "facerecon_plugins.l2": "facerecon_plugins.metrics.l2",
    "facerecon_plugins.dot": "facerecon_plugins.metrics.dot",
    "facerecon_plugins.tv": "facerecon_plugins.regularizers.tv",
    "facerecon_plugins.guide": "facerecon_plugins.regularizers.guide",
    "facerecon_plugins.gaussian": "facerecon_plugins.regularizers.gaussian",
    "facerecon_plugins.laplacian": "facerecon_plugins.regularizers.laplacian",
    "facerecon_plugins.mirror": "facerecon_plugins.regularizers.mirror",
    "facerecon_plugins.sgd": "facerecon_plugins.solvers.sgd",
    "facerecon_plugins.adam": "facerecon_plugins.solvers.adam",
    "facerecon_plugins.feedforward": "facerecon_plugins.solvers.feedforward",
    "facerecon_plugins.mlflow_tracking": "facerecon_plugins.lifecycle.mlflow_tracking",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves an old path as the module at its new one (the same module object)."""

    def find_spec(self, name, path=None, target=None):
        new = _target(name)
        if new is None:
            return None
        # the new module's file as the origin: ``python -m`` and click name the program by it
        origin = importlib.util.find_spec(new).origin
        return importlib.util.spec_from_loader(name, self, origin=origin)

    def create_module(self, spec) -> ModuleType:
        return importlib.import_module(_target(spec.name))

    def exec_module(self, module: ModuleType) -> None:
        return None

    def get_code(self, name: str):
        # ``python -m <old path>`` runs the module at the new one
        target = importlib.util.find_spec(_target(name))
        return target.loader.get_code(target.name)


def _target(name: str) -> str | None:
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old) :]
    return None


def install() -> None:
    """Serve the old paths (once per process; no module lives at an old path any more)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
