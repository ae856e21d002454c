"""The attack evaluation protocol end to end on a small labelled folder the tests make from
built-in photos (Obama three times, eight other people once, one unreadable file), with the
tiny model attacked and a second tiny network as the transfer judge. The numbers are
checked against a direct count over embeddings computed here with plain Keras and numpy."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
import skimage.io
from click.testing import CliRunner
from mlflow import MlflowClient

from facerecon import api, hookimpl
from facerecon.cli import main
from facerecon.core.errors import FaceReconError
from facerecon.core.registry import plugin_manager
from facerecon.engine.executors import local
from facerecon.engine.validation import validate
from facerecon.evaluation import attack
from facerecon.faces import photos as faces

from .tiny_model import TinyModel

PEOPLE = {
    "obama": ["builtin:obama/1", "builtin:obama/2", "builtin:obama/3"],
    "biden": ["builtin:biden"],
    "hanks": ["builtin:tom-hanks"],
    "eileen": ["builtin:astronaut"],
    "grace": ["builtin:grace-hopper"],
    **{f"r{i}": [f"builtin:radar/{i}"] for i in range(4)},
}
SPEC = {
    "name": "attack",
    "model": {"name": "tiny"},
    "targets": [{"image": "builtin:astronaut"}],  # replaced by each person's photo
    "solver": {"name": "adam", "steps": 3, "lr": 0.05},
    "judges": {"models": ["tiny", "tiny-judge"], "detector": None},
    "tracking": {"experiment": "attack", "image_every": 10},
}


class TinyJudge(TinyModel):
    """Another tiny network (other weights): a judge that is not the attacked model."""

    name = "tiny-judge"

    def network(self) -> keras.Model:
        if not hasattr(self, "_net"):
            keras.utils.set_random_seed(7)
            x = inputs = keras.Input((32, 32, 3))
            x = keras.layers.Conv2D(8, 5, strides=2, activation="relu")(x)
            x = keras.layers.GlobalAveragePooling2D()(x)
            x = keras.layers.Dense(16, name="embedding")(x)
            self._net = keras.Model(inputs, x, name="tiny_judge")
        return self._net


class _Judge:
    @hookimpl
    def register_models(self, register):
        register(TinyJudge)


@pytest.fixture(autouse=True)
def judge_model():
    pm = plugin_manager()
    plugin = _Judge()
    pm.register(plugin, name="tests.tiny-judge")
    yield
    pm.unregister(plugin)


def _write(root, people: dict[str, list[str]]) -> None:
    for name, sources in people.items():
        (root / name).mkdir(parents=True)
        for k, source in enumerate(sources, 1):
            image = (faces.read_image(source) * 255).astype(np.uint8)
            skimage.io.imsave(root / name / f"{name}_{k:04d}.png", image)


@pytest.fixture
def collection(tmp_path):
    root = tmp_path / "people"
    _write(root, PEOPLE)
    (root / "broken").mkdir()
    (root / "broken" / "broken_0001.png").write_text("not an image")
    return root


def _embed(model: TinyModel, image: np.ndarray) -> np.ndarray:
    """The model's unit embedding of an image, by plain Keras (not facerecon's forward)."""
    chip = faces.resize(image, 32)[None].astype(np.float32)
    row = np.asarray(model.network()(chip))[0].astype(np.float64)
    return row / np.linalg.norm(row)


def test_lfw_pairs_are_read_with_their_header_and_bad_lines_named(tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("10 300\nobama 1 3\nobama 2 biden 1\n")
    matched, mismatched = attack.read_pairs(pairs, tmp_path)
    assert matched == [(tmp_path / "obama/obama_0001.jpg", tmp_path / "obama/obama_0003.jpg")]
    assert mismatched == [(tmp_path / "obama/obama_0002.jpg", tmp_path / "biden/biden_0001.jpg")]
    pairs.write_text("obama 1\n")
    with pytest.raises(FaceReconError, match=r"pairs.txt:1: 'obama 1': a pair is"):
        attack.read_pairs(pairs, tmp_path)


def test_thresholds_and_success_rates_are_a_direct_count():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((40, 8))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    names = [f"p{i // 2}" for i in range(40)]  # 20 people, two photos each
    model = TinyModel(TinyModel.Params())
    judged = attack.calibrate(model, attack.Embedded(rows, [], names))
    impostor = [
        rows[i] @ rows[j] for i in range(40) for j in range(i + 1, 40) if names[i] != names[j]
    ]
    assert len(judged.impostor) == len(impostor) == 760
    ranked = sorted(impostor, reverse=True)
    # 1e-2 of 760 pairs: 7 may pass, so t sits just above the 8th highest impostor score
    assert judged.thresholds["1e-2"] == pytest.approx(ranked[7], abs=1e-12)
    assert np.sum(judged.impostor >= judged.thresholds["1e-2"]) == 7
    assert set(judged.thresholds) == {"1e-2"}  # 1e-3 would rest on fewer than 10 pairs
    cosines = [0.1, 0.5, ranked[7] - 1e-9, ranked[6], 0.99]
    assert attack.sar(cosines, judged.thresholds) == {"1e-2": 2 / 5}


def test_an_attack_reports_white_box_and_transfer_rates_and_resumes(collection, store):
    spec = validate(SPEC)
    result, folder = api.attack(spec, str(collection), identities=3)
    data = json.loads((folder / "attack.json").read_text())
    assert data["people"] == ["obama", "biden", "eileen"]  # several photos first, then names
    ((broken, why),) = data["skipped_photos"].items()
    assert broken == str(collection / "broken" / "broken_0001.png")
    assert why.startswith("not a readable image")
    attacked, judge = TinyModel(TinyModel.Params()), TinyJudge(TinyJudge.Params())
    photos = {
        name: [faces.read_photo(p) for p in sorted((collection / name).iterdir())]
        for name in PEOPLE
    }
    for model, setting in ((attacked, "white-box"), (judge, "transfer")):
        embedded = {n: [_embed(model, im) for im in ims] for n, ims in photos.items()}
        flat = [(n, e) for n, es in embedded.items() for e in es]
        impostor = sorted(
            (a @ b for i, (n, a) in enumerate(flat) for m, b in flat[i + 1 :] if n != m),
            reverse=True,
        )
        threshold = float(np.nextafter(impostor[math.floor(0.01 * len(impostor))], np.inf))
        (reference,) = [j for j in data["judges"] if j["judge"] == model.name]
        assert reference["impostor_pairs"] == len(impostor) == 11 * 10 // 2 - 3
        assert reference["threshold@1e-2"] == pytest.approx(threshold, abs=1e-6)
        # the reconstructions, judged here from their images
        type1, type2 = [], []
        for name in data["people"]:
            image = result.methods[0].images[name]
            mine = _embed(model, image)
            type1.append(mine @ embedded[name][0])
            type2 += [mine @ other for other in embedded[name][1:]]
            entry = data["per_person"][result.methods[0].name][name][model.name]
            assert entry["type1"] == pytest.approx(type1[-1], abs=1e-5)
        (row,) = [
            r for r in data["methods"] if r["judge"] == model.name and r["method"].startswith("it")
        ]
        assert row["setting"] == setting
        assert row["sar1@1e-2"] == pytest.approx(np.mean(np.array(type1) >= threshold))
        assert row["sar2@1e-2"] == pytest.approx(np.mean(np.array(type2) >= threshold))
        assert row["comparisons_type2"] == 2 and row["people"] == 3
        assert row["mean_type1"] == pytest.approx(np.mean(type1), abs=1e-5)
    assert {p.name for p in (folder / "people").iterdir()} == {
        "obama.jpg",
        "biden.jpg",
        "eileen.jpg",
    }
    assert (folder / "people.jpg").is_file()
    assert not (folder / "lineup").exists()  # one person with another photo: no line-up
    assert (folder / "roc.png").stat().st_size > 0 and "SAR I @1e-2" in (
        folder / "attack.md"
    ).read_text()
    client = MlflowClient(store)
    parent = client.get_run(result.run_id)
    assert parent.data.tags["facerecon.kind"] == "attack"
    assert "attack/iterative/tiny-judge/sar1_fmr1e-2" in parent.data.metrics
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert len(children) == 3
    # one more person: only that one is attacked; the three are read back from the store
    again, _ = api.attack(spec, str(collection), identities=4)
    assert again.run_id == result.run_id
    assert again.resumed == ["biden", "eileen", "obama"]
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert len(children) == 4
    before = data["per_person"][result.methods[0].name]
    after = json.loads((folder / "attack.json").read_text())["per_person"]
    assert after[again.methods[0].name]["obama"] == before["obama"]
    # `facerecon report` shows the evaluation's tables beside the runs'
    made = api.report("attack", store.removeprefix("sqlite:///").rsplit("/", 1)[0] + "/report")
    (table,) = made.folder.glob("attack-*.md")
    assert table.read_text() == (folder / "attack.md").read_text()


def test_an_interrupted_attack_keeps_what_finished_and_the_next_run_resumes(
    collection, store, monkeypatch
):
    calls = []

    def interrupted(variant, parent_run_id):
        calls.append(variant.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(variant, parent_run_id)

    original = local.run_variant
    monkeypatch.setattr(local, "run_variant", interrupted)
    spec = validate(SPEC)
    with pytest.raises(KeyboardInterrupt):
        api.attack(spec, str(collection), identities=2)
    client = MlflowClient(store)
    (experiment,) = [e.experiment_id for e in client.search_experiments() if e.name == "attack"]
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if r.data.tags.get("facerecon.kind") == "attack"]
    assert parent.info.status == "KILLED"
    assert [r.info.status for r in runs if r is not parent] == ["FINISHED"]
    monkeypatch.setattr(local, "run_variant", original)
    result, _ = api.attack(spec, str(collection), identities=2)
    assert result.resumed == ["obama"] and result.run_id == parent.info.run_id
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_the_line_up_shows_each_method_above_the_other_photos_of_its_people(tmp_path, store):
    from facerecon.evaluation import lineup

    root = tmp_path / "two"
    _write(root, {"a": ["builtin:obama/1", "builtin:obama/2"], "b": ["builtin:radar/0",
           "builtin:radar/1"], "c": ["builtin:biden"]})  # fmt: skip
    result, folder = api.attack(validate(SPEC), str(root), identities=3)
    key = json.loads((folder / "lineup" / "key.json").read_text())
    assert key["run_id"] == result.run_id is not None
    assert sorted(key["people"]) == ["a", "b"]  # c has no other photo
    assert sorted(key["methods"].values()) == sorted(m.name for m in result.methods)
    ((sheet),) = key["sheets"]
    methods = {m.name: m for m in result.methods}

    def expected(name: str, person: str) -> list[np.ndarray]:
        second = sorted((root / person).iterdir())[1]
        chip = faces.chip(result.model, faces.read_photo(second), True, "")[0]
        return [faces.resize(x, lineup.CELL) for x in (methods[name].images[person], chip)]

    for code, name in key["methods"].items():
        image = skimage.io.imread(folder / "lineup" / code / "sheet1.jpg") / 255
        for c, person in enumerate(sheet["letters"]):
            other = ({"a", "b"} - {person}).pop()
            number = sheet["key"]["AB"[c]]
            places = ((0, c), (1, number - 1))
            for (row, column), mine, theirs in zip(
                places, expected(name, person), expected(name, other), strict=True
            ):
                y, x = lineup.cell_origin(row, column)
                cell = image[y : y + lineup.CELL, x : x + lineup.CELL]
                assert np.abs(cell - mine).mean() < 0.03  # JPEG's loss
                if row == 1 or name != "baseline (start image)":
                    assert np.abs(cell - mine).mean() < np.abs(cell - theirs).mean()
    # the same sheets with look-alikes grouped: here both people on one sheet again
    alike = json.loads((folder / "lineup-lookalike" / "key.json").read_text())
    assert alike["grouping"].startswith("with look-alikes (by tiny-judge's cosine")
    assert sorted(alike["sheets"][0]["letters"]) == ["a", "b"]
    # an observer's answers, scored and logged to the evaluation's run
    (folder / "lineup" / "answers").mkdir()
    right = {"1": key["sheets"][0]["key"]}
    for code in key["methods"]:
        (folder / "lineup" / "answers" / f"{code}.json").write_text(
            json.dumps({"set": code, "observer": "o", "answers": right})
        )
    rows, logged = api.lineup(folder / "lineup")
    assert logged == result.run_id and all(r["correct"] == 2 for r in rows)
    run = MlflowClient(store).get_run(result.run_id)
    assert run.data.metrics["lineup/lineup/iterative_adam_/matched"] == 1.0
    assert run.data.metrics["lineup/lineup/baseline_start_image_/matched"] == 1.0
    logged_files = {a.path for a in MlflowClient(store).list_artifacts(result.run_id, "lineup")}
    assert {"lineup/scores.md", "lineup/scores.json", "lineup/answers"} <= logged_files


def test_one_photo_per_person_reports_type_one_only(tmp_path, store):
    root = tmp_path / "singles"
    _write(root, {name: PEOPLE[name][:1] for name in ("biden", "hanks", "r0")})
    spec = validate({**SPEC, "tracking": {**SPEC["tracking"], "enabled": False}})
    outcome = CliRunner().invoke(
        main, ["evaluate", _spec_file(tmp_path, spec), "--collection", str(root), "--no-track"]
    )
    assert outcome.exit_code == 0, outcome.output
    assert "one photo per person: no type II comparisons" in outcome.output
    data = json.loads((tmp_path / "evaluations" / "attack" / "attack.json").read_text())
    assert data["type2"] is False
    assert all(row["sar2@1e-2"] is None for row in data["methods"])


def _spec_file(tmp_path, spec) -> str:
    import yaml

    path = tmp_path / "attack.yaml"
    path.write_text(yaml.safe_dump(spec.resolved()))
    return str(path)


def test_a_generator_is_judged_by_the_same_protocol(collection, store):
    trained = api.run(
        validate(
            {
                **SPEC,
                "name": "gen",
                "solver": {
                    "name": "feedforward",
                    "generator": {"filters": 4, "depth": 2},
                    "steps": 3,
                    "batch": 4,
                    "report_every": 3,
                },
                "judges": {"models": [], "detector": None},
                "tracking": {"experiment": "gen"},
            }
        )
    )
    source = f"runs:/{trained.run_id}/generator"
    spec = validate({**SPEC, "tracking": {**SPEC["tracking"], "enabled": False}})
    result, folder = api.attack(spec, str(collection), identities=2, generators=(source,))
    generated = result.methods[1]
    assert [m.name for m in result.methods] == [
        "iterative (adam)",
        "generator 1",
        "baseline (start image)",
    ]
    assert json.loads((folder / "attack.json").read_text())["generators"] == {"generator 1": source}
    assert generated.seconds > 0
    judge = TinyJudge(TinyJudge.Params())
    for name in ("obama", "biden"):
        photo = faces.read_photo(sorted((collection / name).iterdir())[0])
        mine = _embed(judge, generated.images[name]) @ _embed(judge, photo)
        assert generated.scores[name]["tiny-judge"]["type1"] == pytest.approx(mine, abs=1e-5)
    # generators alone: the first method is a generator now, and it is judged too
    alone, _ = api.attack(
        spec, str(collection), identities=2, generators=(source,), iterative=False
    )
    assert [m.name for m in alone.methods] == ["generator 1", "baseline (start image)"]
    assert alone.methods[0].scores["obama"] == generated.scores["obama"]
    rows = [r for r in json.loads((folder / "attack.json").read_text())["methods"]]
    assert {(r["method"], r["judge"]) for r in rows} == {
        (m, j) for m in (r["method"] for r in rows) for j in ("tiny", "tiny-judge")
    }


def test_one_person_without_calibrated_judges_is_one_line(tmp_path):
    root = tmp_path / "one"
    _write(root, {"obama": PEOPLE["obama"]})
    spec = validate({**SPEC, "tracking": {**SPEC["tracking"], "enabled": False}})
    with pytest.raises(FaceReconError) as caught:
        api.attack(spec, str(root))
    assert caught.value.lines == [
        "judge 'tiny': the collection gives no impostor pairs (photos of two or more people) "
        "to set its thresholds, and the model has no calibrated ones"
    ]
