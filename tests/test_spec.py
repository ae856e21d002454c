"""Spec validation: every class of error is one line with key path, value, allowed, matches."""

from __future__ import annotations

import pytest

from facerecon.core.errors import FaceReconError
from facerecon.engine.validation import load, validate
from facerecon.faces import datasets

from .experiments import EXPERIMENTS, SPECS, validated

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


def test_unreadable_spec_files_are_one_line_each(tmp_path, monkeypatch):
    with pytest.raises(FaceReconError) as info:
        load(tmp_path)
    assert info.value.lines == [f"{tmp_path}: is a folder; give a YAML spec file"]
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(FaceReconError) as info:
        load(latin)
    assert info.value.lines == [f"{latin}: not a UTF-8 text file (byte 9); save the spec as UTF-8"]
    locked = tmp_path / "locked.yaml"
    locked.write_text("name: t\n")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(locked), "read_text", refuse)  # tests may run as root
    with pytest.raises(FaceReconError) as info:
        load(locked)
    assert info.value.lines == [f"{locked}: spec file not readable (permission denied)"]


def test_duplicate_yaml_keys_are_refused_with_their_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(
        "name: t\nmodel: {name: tiny}\ntargets: [{image: builtin:astronaut}]\n"
        "seed: 1\nsolver: {name: adam, lr: 0.1, lr: 0.2}\n"
    )
    with pytest.raises(FaceReconError) as info:
        load(path)
    assert info.value.lines == [
        f"{path}: line 5, column 31: not valid YAML: duplicate key 'lr' (first on line 5)"
    ]
    path.write_text(path.read_text().replace("lr: 0.2", "steps: 3") + "seed: 2\n")
    with pytest.raises(FaceReconError) as info:
        load(path)
    assert info.value.lines == [
        f"{path}: line 6, column 1: not valid YAML: duplicate key 'seed' (first on line 4)"
    ]


def test_regularizer_labels_must_be_unique_and_not_reserved():
    lines = errors(
        {
            **BASE,
            "loss": {
                "regularizers": [
                    {"name": "tv"},
                    {"name": "tv"},
                    {"name": "mirror", "label": "tv_2"},
                    {"name": "mirror", "label": "distance"},
                ]
            },
        }
    )
    assert lines == [
        "loss.regularizers[2].label: 'tv_2' is already the label of loss.regularizers[1]; "
        "give each term its own `label`",
        "loss.regularizers[3].label: 'distance' is reserved for the objective's own results "
        "(total, embedding, distance, cosine); give the term another `label`",
    ]
    validate({**BASE, "loss": {"regularizers": [{"name": "tv"}, {"name": "tv", "label": "a"}]}})


def test_a_guided_generator_needs_guides():
    (line,) = errors({**BASE, "solver": {"name": "feedforward", "generator": {"kind": "guided"}}})
    assert line == (
        "solver.generator.kind: 'guided' needs at least one entry under `guides` "
        "(or solver.generator.nearest)"
    )
    nearest = {"kind": "guided", "nearest": {"k": 4}}
    spec = {**BASE, "solver": {"name": "feedforward", "generator": nearest}}
    assert validate(spec).solver.name == "feedforward"
    (line,) = errors({**spec, "guides": [{"image": "builtin:astronaut"}]})
    assert line.startswith("solver.generator.nearest: the generator makes each template's guide")
    (line,) = errors({**BASE, "solver": {"name": "feedforward", "generator": {"nearest": {}}}})
    assert "`nearest` gives guides: it goes with kind: guided" in line


def test_the_photo_term_needs_the_photo_sampler():
    solver = {"name": "feedforward", "photo_weight": 1.0}
    (line,) = errors({**BASE, "solver": solver})
    assert line.startswith("solver: ") and "they go with sampling.kind photos" in line
    (line,) = errors({**BASE, "solver": {"name": "feedforward", "photo_layers": {"conv1": 1}}})
    assert "they go with sampling.kind photos" in line
    photos = {**solver, "sampling": {"kind": "photos"}}
    assert validate({**BASE, "solver": photos}).solver.photo_weight == 1.0


def test_identical_restarts_are_refused():
    (line,) = errors({**BASE, "restarts": 3, "init": {"kind": "mean", "noise": 0}})
    assert line == (
        "init.noise: 0 with restarts: 3 and init.kind: 'mean' would solve identical copies; "
        "give noise > 0 or restarts: 1"
    )


def test_missing_files_are_found_before_anything_runs(tmp_path):
    (tmp_path / "there.jpg").write_bytes(b"")
    lines = errors_in(
        tmp_path,
        {
            **BASE,
            "targets": [
                {"image": "there.jpg", "same_person": ["there.jpg", "gone.jpg"]},
                {"embedding": "e.npy", "photo": "builtin:obama/9"},
                {"image": "builtin:radar/3"},  # a dataset built-in, checked by name only
            ],
            "guides": [{"image": "guides/"}],
            "init": {"kind": "image", "image": "start.png"},
        },
    )
    assert lines == [
        f"targets[0].same_person[1]: {tmp_path / 'gone.jpg'}: file not found (got 'gone.jpg')",
        f"targets[1].embedding: {tmp_path / 'e.npy'}: embedding file not found (got 'e.npy')",
        "targets[1].photo: builtin:obama/9: no such built-in face; choose from "
        + lines[2].split("choose from ", 1)[1],
        f"guides[0].image: {tmp_path / 'guides'}: file not found (got 'guides/')",
        f"init.image: {tmp_path / 'start.png'}: file not found (got 'start.png')",
    ]
    assert "obama/<i> with i in 1..3" in lines[2]


def errors_in(base_dir, raw) -> list[str]:
    with pytest.raises(FaceReconError) as info:
        validate(raw, base_dir=base_dir)
    return info.value.lines


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_every_experiment_validates_without_fetching(path, tmp_path, monkeypatch):
    def no_fetch(name):
        raise AssertionError(f"validation fetched {name}")

    monkeypatch.setattr(datasets, "ensure", no_fetch)
    assert validated(path, tmp_path)


def test_the_experiments_are_all_checked():
    names = {str(p.relative_to(EXPERIMENTS)) for p in SPECS}
    assert {"quickstart.yaml", "paper/fig1-techniques.yaml", "feedforward/train-dlib.yaml"} <= names
    assert len(names) >= 15
