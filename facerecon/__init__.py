"""facerecon: turn face-recognition embeddings back into face images."""

from facerecon.errors import FaceReconError
from facerecon.hookspecs import hookimpl
from facerecon.kinds import FaceChip, FaceModel, Metric, Params, Regularizer, Solver, SolveResult

__version__ = "0.1.0"

__all__ = [
    "FaceChip",
    "FaceModel",
    "FaceReconError",
    "Metric",
    "Params",
    "Regularizer",
    "SolveResult",
    "Solver",
    "__version__",
    "hookimpl",
]
