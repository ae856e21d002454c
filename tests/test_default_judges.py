"""Default judges: only models marked ``default_judge``; any calibrated model when named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.io

from facerecon import hookimpl
from facerecon.core.registry import plugin_manager, registry
from facerecon.engine.runner import instantiate
from facerecon.engine.validation import validate
from facerecon.faces.photos import resize
from facerecon.judges import scoring as judging

from .entry_points import ROOT
from .tiny_model import TinyModel


class DefaultJudge(TinyModel):
    """Calibrated and marked a default judge (as faceres is)."""

    name = "tiny-default"
    thresholds = {"1e-2": 0.3, "1e-3": 0.9}
    default_judge = True


class NamedOnly(TinyModel):
    """Calibrated but not a default judge (as facenet and mobilefacenet are): it judges a
    run only when the spec names it."""

    name = "tiny-named"
    thresholds = {"1e-2": 0.4, "1e-3": 0.8}


class _Plugins:
    @hookimpl
    def register_models(self, register):
        register(DefaultJudge)
        register(NamedOnly)


@pytest.fixture
def tiny_judges():
    """The two tiny judges in the plugin manager (for validating specs that name them)."""
    pm = plugin_manager()
    pm.register(_Plugins(), name="tests.default-judges")
    yield
    pm.unregister(name="tests.default-judges")


class _Registry:
    """These three models only: the installed ones (faceres) are not built here."""

    models = {m.name: m for m in (TinyModel, DefaultJudge, NamedOnly)}

    def names(self, kind):
        return sorted(self.models) if kind == "model" else []

    def get(self, kind, name):
        return self.models[name]


def _spec(model: str, **judges) -> dict:
    return {
        "name": "d",
        "model": {"name": model},
        "targets": [{"image": "builtin:astronaut"}],
        "judges": {"detector": None, **judges},
        "tracking": {"enabled": False},
    }


def test_calibrating_two_real_models_adds_no_default_judge(monkeypatch):
    reg = registry()
    for name in ("facenet", "mobilefacenet"):
        monkeypatch.setattr(reg.get("model", name), "thresholds", {"1e-2": 0.3, "1e-3": 0.4})
    chosen, skipped = judging.judge_names(validate(_spec("dlib-resnet")), reg)
    # faceres judges by default whether or not its weights are at hand here
    assert sorted([*chosen, *skipped]) == ["faceres"]
    # on the newly calibrated models, the judges of before: dlib-resnet and faceres
    for attacked in ("facenet", "mobilefacenet"):
        chosen, skipped = judging.judge_names(validate(_spec(attacked)), reg)
        assert sorted([*chosen, *skipped]) == ["dlib-resnet", "faceres"]
    # named, a calibrated model judges: the spec's list as it is
    named = validate(_spec("dlib-resnet", models=["facenet", "mobilefacenet"]))
    assert judging.judge_names(named, reg) == (["facenet", "mobilefacenet"], {})


def test_facenet_and_mobilefacenet_are_calibrated_but_no_default_judges():
    reg = registry()
    for name in ("facenet", "mobilefacenet"):
        cls = reg.get("model", name)
        assert set(cls.thresholds) == {"1e-2", "1e-3"}
        # a stricter false-match rate needs a higher cosine
        assert -1 < cls.thresholds["1e-2"] < cls.thresholds["1e-3"] < 1
        assert cls.default_judge is False
    assert reg.get("model", "faceres").default_judge is True
    assert reg.get("model", "dlib-resnet").default_judge is True


def test_only_the_marked_model_judges_by_default_and_a_named_one_is_built(tmp_path, tiny_judges):
    rng = np.random.default_rng(3)
    image = (np.kron(rng.random((4, 4, 3)), np.ones((10, 10, 1))) * 255).astype(np.uint8)
    skimage.io.imsave(tmp_path / "a.png", image, check_contrast=False)
    data = _spec("tiny") | {"targets": [{"image": "a.png"}]}
    built = judging.prepare(validate(data, base_dir=tmp_path), _Registry(), instantiate)
    assert [m.name for m in built.models] == ["tiny-default"] and built.skipped == {}

    data["judges"]["models"] = ["tiny-named"]
    built = judging.prepare(validate(data, base_dir=tmp_path), _Registry(), instantiate)
    assert [m.name for m in built.models] == ["tiny-named"]
    # its reference is its own embedding of the photo, worked out here
    row = NamedOnly().network()(resize(image.astype(np.float32) / 255, 32)[None]).numpy()[0]
    (refs,) = built.references["tiny-named"]
    np.testing.assert_allclose(refs.type1, row / np.linalg.norm(row), atol=1e-5)
    # and it scores with its own thresholds (0.4 and 0.8)
    assert judging.passes(built.models[0], 0.5) == {"pass_fmr1e-2": True, "pass_fmr1e-3": False}


@pytest.mark.parametrize(
    ("model", "file"),
    [
        ("facenet", "plugins/models/facenet/thresholds.json"),
        ("mobilefacenet", "plugins/models/onnx/mobilefacenet-thresholds.json"),
    ],
)
def test_each_model_loads_its_committed_calibration(model, file):
    record = json.loads((ROOT / file).read_text())
    assert record["model"] == model
    assert registry().get("model", model).thresholds == record["thresholds"]
