"""facerecon: turn face-recognition embeddings back into face images."""

from facerecon.core import moved
from facerecon.core.errors import FaceReconError
from facerecon.core.hookspecs import hookimpl
from facerecon.core.kinds import (
    Detection,
    Detector,
    FaceChip,
    FaceModel,
    Metric,
    Parameterization,
    Params,
    Regularizer,
    Solver,
    SolveResult,
    Transform,
)

__version__ = "0.1.0"

moved.install()

__all__ = [
    "Detection",
    "Detector",
    "FaceChip",
    "FaceModel",
    "FaceReconError",
    "Metric",
    "Parameterization",
    "Params",
    "Regularizer",
    "SolveResult",
    "Solver",
    "Transform",
    "__version__",
    "hookimpl",
]
