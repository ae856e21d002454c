"""Loading a generator runs no code from its files: only an MLflow Keras model whose
``.keras`` file is inside the folder, in Keras's safe mode; anything else is one line."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from facerecon.core.errors import FaceReconError
from facerecon.core.registry import registry
from facerecon_plugins.solvers.feedforward import store
from facerecon_plugins.solvers.feedforward.generator import (
    Generator,
    GeneratorConfig,
    GeneratorParams,
)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model = registry().get("model", "tiny")()
    config = GeneratorConfig.of(GeneratorParams(filters=4, depth=2), model)
    return store.save(Generator.build(config), tmp_path / "generator")


def _mlmodel(folder: Path) -> dict:
    return yaml.safe_load((folder / "MLmodel").read_text())


def _write(folder: Path, data: dict) -> None:
    (folder / "MLmodel").write_text(yaml.safe_dump(data))


def test_a_saved_generator_loads_back_the_same(saved: Path):
    loaded = store.load(str(saved))
    x = np.random.default_rng(0).normal(size=(2, loaded.config.embedding_size)).astype(np.float32)
    again = store.load(str(saved))
    np.testing.assert_array_equal(loaded.generate(x), again.generate(x))


def test_a_savedmodel_flavour_is_refused_unread(saved: Path):
    data = _mlmodel(saved)
    data["flavors"]["keras"]["save_exported_model"] = True
    _write(saved, data)
    (saved / "data" / "model.keras").unlink()  # nothing is read: the refusal comes first
    with pytest.raises(FaceReconError) as error:
        store.load(str(saved))
    assert "\n" not in str(error.value) and "save_exported_model: true" in str(error.value)


def test_a_model_file_outside_the_folder_is_refused(saved: Path, tmp_path: Path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "model.keras").write_bytes((saved / "data" / "model.keras").read_bytes())
    data = _mlmodel(saved)
    data["flavors"]["keras"]["data"] = "../elsewhere"
    _write(saved, data)
    with pytest.raises(FaceReconError, match="no model.keras inside the model folder"):
        store.load(str(saved))


def test_a_lambda_layer_is_refused_by_safe_mode_in_one_line(saved: Path, tmp_path: Path):
    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda x: x * 2)(inp)
    keras.Model(inp, out).save(tmp_path / "lambda.keras")
    (saved / "data" / "model.keras").write_bytes((tmp_path / "lambda.keras").read_bytes())
    with pytest.raises(FaceReconError) as error:
        store.load(str(saved))
    message = str(error.value)
    assert "\n" not in message and "cannot load the generator safely" in message


def test_a_folder_that_is_not_a_keras_model_is_one_line(saved: Path):
    data = _mlmodel(saved)
    del data["flavors"]["keras"]
    _write(saved, data)
    with pytest.raises(FaceReconError, match="not a Keras model"):
        store.load(str(saved))
