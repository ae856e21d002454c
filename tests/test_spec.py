"""Spec validation: every class of error is one line with key path, value, allowed, matches."""

from __future__ import annotations

import pytest

from facerecon.errors import FaceReconError
from facerecon.spec import load, validate

BASE = {"name": "t", "model": {"name": "tiny"}, "targets": [{"image": "builtin:astronaut"}]}


def errors(raw) -> list[str]:
    with pytest.raises(FaceReconError) as info:
        validate(raw)
    return info.value.lines


def test_a_valid_spec_fills_defaults():
    spec = validate({**BASE, "loss": {"regularizers": [{"name": "tv", "weight": 0.1}]}})
    assert spec.solver.name == "adam"
    assert spec.loss.metric.name == "l2"
    resolved = spec.resolved()
    assert resolved["loss"]["regularizers"][0]["schedule"]["kind"] == "constant"
    assert resolved["tracking"]["image_every"] == 25


def test_unknown_top_level_key_with_close_match():
    (line,) = errors({**BASE, "solvr": {"name": "adam"}})
    assert line.startswith("solvr: unknown key 'solvr'; allowed:")
    assert "did you mean 'solver'?" in line


def test_unknown_plugin_name_lists_choices_and_close_match():
    (line,) = errors({**BASE, "loss": {"regularizers": [{"name": "tvv"}]}})
    assert line.startswith("loss.regularizers[0].name: unknown regularizer 'tvv'; choose from")
    assert "gaussian, guide, laplacian, mirror, tv" in line
    assert "did you mean 'tv'?" in line


def test_unknown_plugin_parameter_names_the_allowed_ones():
    (line,) = errors({**BASE, "loss": {"regularizers": [{"name": "tv", "alpah": 2}]}})
    assert line == (
        "loss.regularizers[0].alpah: unknown key 'alpah'; allowed: alpha, label, "
        "name, schedule, weight (did you mean 'alpha'?)"
    )


def test_wrong_type_and_out_of_range_are_reported_together():
    lines = errors(
        {
            **BASE,
            "loss": {
                "regularizers": [{"name": "tv", "weight": -1}, {"name": "tv", "alpha": "big"}]
            },
            "solver": {"name": "sgd", "steps": 0, "momentum": 1.5},
            "restarts": "two",
        }
    )
    assert len(lines) == 5
    text = "\n".join(lines)
    assert (
        "loss.regularizers[0].weight: Input should be greater than or equal to 0 (got -1)" in text
    )
    assert "loss.regularizers[1].alpha: Input should be a valid number" in text
    assert "(got 'big')" in text
    assert "solver.steps: Input should be greater than or equal to 1 (got 0)" in text
    assert "solver.momentum: Input should be less than 1 (got 1.5)" in text
    assert "restarts: Input should be a valid integer" in text


def test_literal_choices_get_close_matches():
    (line,) = errors({**BASE, "init": {"kind": "guid"}})
    assert line.startswith("init.kind: Input should be 'noise', 'guide', 'mean' or 'image'")
    assert "(got 'guid')" in line and "did you mean 'guide'?" in line


def test_schedule_needs_its_parameters():
    (line,) = errors(
        {**BASE, "loss": {"regularizers": [{"name": "tv", "schedule": {"kind": "exponential"}}]}}
    )
    assert line.startswith("loss.regularizers[0].schedule: schedule kind 'exponential' needs rate")


def test_missing_targets_and_bad_target():
    assert errors({"name": "t"}) == ["targets: Field required"]
    (line,) = errors({**BASE, "targets": [{"image": "a.jpg", "embedding": "e.npy"}]})
    assert line.startswith("targets[0]: give exactly one of `image` or `embedding`")


def test_guide_regularizer_needs_guides():
    (line,) = errors({**BASE, "loss": {"regularizers": [{"name": "guide"}]}})
    assert (
        line == "loss.regularizers[0]: regularizer 'guide' needs at least one entry under `guides`"
    )


def test_unknown_model_and_metric():
    lines = errors({**BASE, "model": {"name": "facenett"}, "loss": {"metric": {"name": "cos"}}})
    assert any(
        li.startswith("model.name: unknown model 'facenett'") and "did you mean 'facenet'" in li
        for li in lines
    )
    assert any(
        li.startswith("loss.metric.name: unknown metric 'cos'; choose from dot, l2") for li in lines
    )


def test_yaml_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\ntargets: [\n")
    with pytest.raises(FaceReconError, match=r"bad.yaml: line \d+, column \d+: not valid YAML"):
        load(bad)
    with pytest.raises(FaceReconError, match="spec file not found"):
        load(tmp_path / "missing.yaml")
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("name: !!python/object/apply:os.system ['echo hi']\ntargets: []\n")
    with pytest.raises(FaceReconError, match="not valid YAML"):
        load(unsafe)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(FaceReconError, match=r"list.yaml: \(top level\): a spec is a mapping"):
        load(listy)


def test_every_line_of_a_file_is_prefixed_with_its_path(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: t\nmodel: {name: tiny}\ntargets: [{image: x.jpg}]\nseed: x\nrestarts: 0\n"
    )
    with pytest.raises(FaceReconError) as info:
        load(path)
    assert len(info.value.lines) == 2
    assert all(line.startswith(f"{path}: ") for line in info.value.lines)
