"""Training checkpoints: weights, optimizer state and step (TensorFlow's checkpoint manager),
with the generator's configuration beside them so a resume can refuse another architecture."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facerecon.core.errors import FaceReconError

from .generator import GeneratorConfig

CONFIG_FILE = "generator.json"


class Checkpoints:
    """A folder of checkpoints of one generator's training; the newest is resumed."""

    def __init__(self, folder: str | Path, keep: int = 2) -> None:
        self.folder = Path(folder).expanduser()
        self.keep = keep
        self._manager: tf.train.CheckpointManager | None = None

    def stored(self) -> tuple[GeneratorConfig, np.ndarray, np.ndarray] | None:
        """The configuration and input statistics of the checkpoints here, if any."""
        path = self.folder / CONFIG_FILE
        if not path.exists() or tf.train.latest_checkpoint(str(self.folder)) is None:
            return None
        try:
            data = json.loads(path.read_text())
            config = GeneratorConfig.from_dict(data["config"])
        except (ValueError, KeyError, TypeError) as exc:
            raise FaceReconError(f"{path}: not a facerecon generator checkpoint ({exc})") from None
        return config, np.array(data["mean"], np.float32), np.array(data["variance"], np.float32)

    def check(self, config: GeneratorConfig) -> None:
        """Raise if the stored checkpoint is of another architecture or model."""
        stored = self.stored()
        if stored is not None and stored[0].architecture() != config.architecture():
            raise FaceReconError(
                f"{self.folder}: the checkpoint there is of the {stored[0].describe()}; this "
                f"spec trains the {config.describe()} (use another checkpoints folder)"
            )

    def attach(
        self,
        config: GeneratorConfig,
        network: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        step: tf.Variable,
        mean: np.ndarray,
        variance: np.ndarray,
    ) -> int:
        """Track these objects; restore the newest checkpoint if there is one. Returns the
        step to start from."""
        self.check(config)
        self.folder.mkdir(parents=True, exist_ok=True)
        checkpoint = tf.train.Checkpoint(generator=network, optimizer=optimizer, step=step)
        self._manager = tf.train.CheckpointManager(checkpoint, str(self.folder), self.keep)
        (self.folder / CONFIG_FILE).write_text(
            json.dumps(
                {
                    "config": config.to_dict(),
                    "mean": np.asarray(mean).tolist(),
                    "variance": np.asarray(variance).tolist(),
                },
                indent=1,
            )
        )
        latest = self._manager.latest_checkpoint
        if latest is None:
            return 0
        # Optimizer slots must exist before their values can be restored into them.
        if not optimizer.built:
            optimizer.build(network.trainable_variables)
        checkpoint.restore(latest).assert_existing_objects_matched()
        return int(step.numpy())

    def save(self, step: int) -> str:
        """Write a checkpoint at ``step`` (the number of steps done)."""
        assert self._manager is not None, "attach() first"
        return self._manager.save(checkpoint_number=step)
