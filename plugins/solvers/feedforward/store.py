"""Generators as MLflow models (Keras format, with an input signature and their configuration
as model metadata): saving one, and loading one back from any MLflow model URI or folder."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facerecon.core.errors import FaceReconError
from facerecon.tracking.store import tracking_uri

from .generator import Generator, GeneratorConfig

ARTIFACT_PATH = "generator"
METADATA_KEY = "facerecon_generator"
#: generators that ship with facerecon, each an MLflow model folder: ``-g builtin:NAME``
SHIPPED = Path(__file__).with_name("shipped")


def shipped() -> list[str]:
    """The names of the generators that ship (``builtin:NAME``)."""
    if not SHIPPED.is_dir():
        return []
    return sorted(p.name for p in SHIPPED.iterdir() if (p / "MLmodel").is_file())


def _resolve(uri: str) -> str:
    """A ``builtin:NAME`` URI as its folder; any other URI as it is."""
    if not uri.startswith("builtin:"):
        return uri
    name = uri.removeprefix("builtin:")
    if name not in shipped():
        raise FaceReconError(
            f"{uri}: no such shipped generator; choose from {', '.join(shipped()) or 'none'}"
        )
    return str(SHIPPED / name)


def example_inputs(config: GeneratorConfig, n: int = 2) -> dict[str, np.ndarray]:
    """A small input batch of the right shapes (for the signature)."""
    inputs = {"embedding": np.zeros((n, config.embedding_size), np.float32)}
    if config.guided:
        size = config.input_size
        inputs["guide"] = np.full((n, size, size, 3), 0.5, np.float32)
    return inputs


def save(generator: Generator, path: str | Path) -> Path:
    """Write the generator as an MLflow Keras model folder at ``path``."""
    import mlflow.keras
    from mlflow.models import infer_signature

    inputs = example_inputs(generator.config)
    outputs = generator.network(list(inputs.values()), training=False).numpy()
    mlflow.keras.save_model(
        generator.network,
        str(path),
        signature=infer_signature(inputs, outputs),
        metadata={METADATA_KEY: generator.config.to_dict()},
        # Pinned here: inferring requirements would load the model again in a subprocess.
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
    )
    return Path(path)


def load(uri: str) -> Generator:
    """A generator from ``runs:/<run_id>/generator``, ``models:/...``, a local folder or
    ``builtin:NAME`` (one that ships, see :func:`shipped`).

    Only what :func:`save` writes is read: an MLflow Keras model whose ``.keras`` file lies
    inside the model folder, loaded in Keras's safe mode (no Lambda layers, no function
    references), never a TensorFlow SavedModel, whose loading can run the file's code.
    """
    import mlflow
    from mlflow.models import Model

    source = _resolve(uri)
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, tracking_uri=tracking_uri()
        )
        info = Model.load(local)
    except Exception as exc:
        raise FaceReconError(
            f"{uri}: no MLflow model there ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
    meta = (info.metadata or {}).get(METADATA_KEY)
    if not meta:
        raise FaceReconError(
            f"{uri}: an MLflow model, but not a facerecon generator (no {METADATA_KEY!r} metadata)"
        )
    return Generator(_network(uri, Path(local), info.flavors), GeneratorConfig.from_dict(meta))


def _network(uri: str, folder: Path, flavors: dict) -> keras.Model:
    """The generator's Keras network, read the safe way (see :func:`load`)."""
    flavor = flavors.get("keras")
    if not isinstance(flavor, dict):
        raise FaceReconError(f"{uri}: not a Keras model (flavors: {', '.join(flavors) or 'none'})")
    if flavor.get("save_exported_model"):
        raise FaceReconError(
            f"{uri}: a TensorFlow SavedModel (save_exported_model: true), which facerecon "
            "refuses to load: loading one can run code from the file; load generators only "
            "from runs you trust"
        )
    root = folder.resolve()
    model_file = (root / str(flavor.get("data", "data")) / "model.keras").resolve()
    if not model_file.is_relative_to(root) or not model_file.is_file():
        raise FaceReconError(f"{uri}: no model.keras inside the model folder")
    try:
        return keras.saving.load_model(model_file, compile=False, safe_mode=True)
    except Exception as exc:  # safe mode's refusals and broken files alike: one line
        why = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise FaceReconError(f"{uri}: cannot load the generator safely ({why})") from None
