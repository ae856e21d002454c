"""Plugin discovery through real entry points, failures, duplicates, and the listing."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pluggy
import pytest
from click.testing import CliRunner

from facerecon.cli import main
from facerecon.core import hookspecs
from facerecon.core.errors import FaceReconError
from facerecon.core.registry import PluginLoadWarning, failures, plugin_manager, registry
from facerecon.engine.validation import validate

from . import tiny_model

THIRD_PARTY = '''
"""A third-party plugin: a brightness prior."""
import keras
import tensorflow as tf
from pydantic import Field
import numpy as np
from facerecon import (
    Detection, Detector, Metric, Parameterization, Params, Regularizer, Transform, hookimpl
)
from facerecon.engine.iterative import IterativeSolver


class Brightness(Regularizer):
    """Pulls the mean brightness towards a level."""

    name = "brightness"

    class Params(Params):
        level: float = Field(0.5, ge=0, le=1, description="target mean")

    def __call__(self, images, taps):
        return tf.square(tf.reduce_mean(images, axis=[1, 2, 3]) - self.params.level)


class L1(Metric):
    """Sum of absolute differences."""

    name = "l1"

    def __call__(self, embeddings, targets):
        return tf.reduce_sum(tf.abs(embeddings - targets), axis=-1)


class RMSProp(IterativeSolver):
    """RMSprop on the pixels."""

    name = "rmsprop"

    def optimizer(self):
        return keras.optimizers.RMSprop(self.params.lr)


class Darken(Transform):
    """Scales every image by a random factor in [0.5, 1]."""

    name = "darken"

    def __call__(self, images, seed):
        factor = tf.random.stateless_uniform(tf.shape(images)[:1], seed, 0.5, 1.0)
        return images * factor[:, None, None, None]


class Squared(Parameterization):
    """Images are the squares of the parameters."""

    name = "squared"

    def from_images(self, images):
        return np.sqrt(images)

    def to_images(self, params):
        return tf.clip_by_value(tf.square(params), 0.0, 1.0)


class Brightest(Detector):
    """'Finds' a face whose score is the image's mean brightness."""

    name = "brightest"

    def detect(self, image):
        h, w = image.shape[:2]
        return [Detection((0, 0, w, h), float(np.mean(image)))]


@hookimpl
def register_transforms(register):
    register(Darken)


@hookimpl
def register_parameterizations(register):
    register(Squared)


@hookimpl
def register_detectors(register):
    register(Brightest)


@hookimpl
def register_regularizers(register):
    register(Brightness)


@hookimpl
def register_metrics(register):
    register(L1)


@hookimpl
def register_solvers(register):
    register(RMSProp)
'''


def _install(site, dist, module, source, group_lines):
    """Write an importable module and a real *.dist-info with entry_points.txt."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[facerecon]\n" + group_lines + "\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh site dir on sys.path and a plugin manager that re-reads entry points."""
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin_manager.cache_clear()
    failures.clear()
    yield tmp_path
    monkeypatch.undo()
    for name in [m for m in sys.modules if m.startswith("fr_thirdparty")]:
        del sys.modules[name]
    plugin_manager.cache_clear()
    failures.clear()


def test_third_party_plugin_is_found_used_and_listed(site, store):
    _install(
        site,
        "fr-brightness",
        "fr_thirdparty_bright",
        THIRD_PARTY,
        "brightness = fr_thirdparty_bright",
    )
    plugin_manager().register(tiny_model, name="tests.tiny")
    entry = registry().by_kind["regularizer"]["brightness"]
    assert (entry.plugin, entry.distribution) == ("brightness", "fr-brightness")
    spec = validate(
        {
            "name": "bright",
            "model": {"name": "tiny"},
            "targets": [{"image": "builtin:astronaut"}],
            "loss": {
                "metric": {"name": "l1"},
                "regularizers": [{"name": "brightness", "level": 0.7}],
            },
            "solver": {"name": "rmsprop", "steps": 3},
            "parameterization": {"name": "squared"},
            "transforms": {"samples": 2, "chain": [{"name": "darken"}]},
            "judges": {"models": [], "detector": "brightest"},
            "tracking": {"enabled": False},
        }
    )
    from facerecon import api

    result = api.run(spec)
    assert set(result.terms) >= {"brightness", "total", "embedding"}
    assert result.steps == 3
    kept = result.images[result.best[0]]
    assert result.judges[0]["brightest"]["score"] == pytest.approx(float(np.mean(kept)), rel=1e-5)
    listing = CliRunner().invoke(main, ["plugins"], env={"COLUMNS": "250"})
    assert listing.exit_code == 0
    assert "brightness" in listing.output and "fr-brightness" in listing.output
    assert "level: float = 0.5" in listing.output
    assert "Pulls the mean brightness towards a level." in listing.output


def test_broken_plugin_is_reported_with_name_and_distribution(site):
    _install(
        site,
        "fr-broken",
        "fr_thirdparty_broken",
        "import not_a_module_anywhere\n",
        "broken = fr_thirdparty_broken",
    )
    with pytest.warns(
        PluginLoadWarning,
        match="plugin 'broken' from distribution 'fr-broken' "
        "failed to import .*ModuleNotFoundError",
    ):
        pm = plugin_manager()
    pm.register(tiny_model, name="tests.tiny")
    assert "tv" in registry().names("regularizer")  # the others still load
    with pytest.raises(
        FaceReconError,
        match="unknown regularizer 'broken'.*note: plugin 'broken' "
        "from distribution 'fr-broken' failed to import",
    ):
        validate(
            {
                "name": "b",
                "model": {"name": "tiny"},
                "targets": [{"image": "x.png"}],
                "loss": {"regularizers": [{"name": "broken"}]},
            }
        )


def test_duplicate_names_are_an_error_naming_both_plugins():
    pm = pluggy.PluginManager("facerecon")
    pm.add_hookspecs(hookspecs)
    pm.register(tiny_model, name="first")

    class Again:
        @hookspecs.hookimpl
        def register_models(self, register):
            register(tiny_model.TinyModel)

    pm.register(Again(), name="second")
    with pytest.raises(
        FaceReconError,
        match="model 'tiny' is registered twice: by plugin "
        "'(first|second)'.* and by plugin '(first|second)'",
    ):
        registry(pm)


def test_builtins_register_through_entry_points():
    import importlib.metadata
    import tomllib

    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="facerecon")}
    pyproject = tomllib.loads(
        (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    )
    declared = pyproject["project"]["entry-points"]["facerecon"]
    assert {"feedforward", "faceres"} <= set(declared)
    for name in (
        *declared,
        "l2",
        "dot",
        "tv",
        "guide",
        "gaussian",
        "laplacian",
        "mirror",
        "sgd",
        "adam",
        "mlflow-tracking",
        "dlib-resnet",
        "facenet",
        "pixels",
        "fft",
        "jitter",
        "scale",
        "rotate",
        "mirror-transform",
        "colour",
        "blur",
        "noise",
        "mtcnn",
    ):
        assert eps[name].dist.name == "facerecon"
        assert eps[name].value.startswith("facerecon_plugins.")
    reg = registry()
    assert reg.by_kind["regularizer"]["tv"].distribution == "facerecon"
    assert reg.by_kind["solver"]["feedforward"].distribution == "facerecon"
