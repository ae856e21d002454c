"""Judges: scores against an independent numpy computation, where they land, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import skimage.io
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from facerecon import Detection, Detector, api, hookimpl
from facerecon.cli import main
from facerecon.core.registry import plugin_manager
from facerecon.engine.validation import validate
from facerecon.faces.photos import resize

from .tiny_model import TinyModel


class JudgeModel(TinyModel):
    """Another tiny network, with calibrated thresholds: a default judge."""

    name = "tiny-judge"
    thresholds = {"1e-2": 0.3, "1e-3": 0.9}

    def network(self) -> keras.Model:
        if not hasattr(self, "_net"):
            keras.utils.set_random_seed(1)
            x = inputs = keras.Input((32, 32, 3))
            # centred pixels through a random projection: different photos, different rows
            x = keras.layers.Rescaling(2.0, -1.0)(x)
            x = keras.layers.Conv2D(4, 4, strides=4)(x)
            x = keras.layers.Flatten()(x)
            self._net = keras.Model(inputs, keras.layers.Dense(8)(x), name="judge")
        return self._net

    def align_chip(self, chip: np.ndarray) -> np.ndarray:
        return resize(chip[4:-4, 4:-4], 32)  # a different crop than align's, on purpose


class Missing(TinyModel):
    name = "tiny-missing"
    thresholds = {"1e-2": 0.5}

    @classmethod
    def available(cls) -> str | None:
        return "its weights are not fetched (test)"


class Corners(Detector):
    """'Detects' a face when the top-left pixel is darker than the centre."""

    name = "corners"

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        found = image[0, 0].mean() < image[h // 2, w // 2].mean()
        return [Detection((0, 0, w, h), 0.75)] if found else []


class JudgePlugins:
    @hookimpl
    def register_models(self, register):
        register(JudgeModel)
        register(Missing)

    @hookimpl
    def register_detectors(self, register):
        register(Corners)


@pytest.fixture
def judges():
    pm = plugin_manager()
    plugin = JudgePlugins()
    pm.register(plugin, name="tests.judges")
    yield
    pm.unregister(name="tests.judges")


def photo(path, seed):
    # coarse colour blocks: photos that even a tiny network tells apart
    rng = np.random.default_rng(seed)
    image = (np.kron(rng.random((4, 4, 3)), np.ones((10, 10, 1))) * 255).astype(np.uint8)
    skimage.io.imsave(path, image, check_contrast=False)
    return image.astype(np.float32) / 255


def spec(tmp_path, **judges):
    return {
        "name": "judged",
        "model": {"name": "tiny"},
        "targets": [
            {"image": "a.png", "same_person": ["b.png", "c.png"]},
            {"image": "c.png"},
        ],
        "solver": {"name": "adam", "steps": 3},
        "judges": judges or {"models": ["tiny-judge"], "detector": "corners"},
        "tracking": {"experiment": "judged"},
    }


def write(tmp_path, data):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def unit(rows):
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_scores_match_numpy_and_land_in_mlflow(tmp_path, store, judges):
    photos = {name: photo(tmp_path / f"{name}.png", i) for i, name in enumerate("abc")}
    result = CliRunner().invoke(
        main, ["run", write(tmp_path, spec(tmp_path))], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "tiny-judge I" in result.output and "tiny-judge II" in result.output

    client = MlflowClient(store)
    (exp,) = [e for e in client.search_experiments() if e.name == "judged"]
    (run,) = client.search_runs([exp.experiment_id])
    table = json.loads(
        Path(client.download_artifacts(run.info.run_id, "candidates.json")).read_text()
    )
    rows = dict(zip(table["columns"], zip(*table["data"], strict=True), strict=True))
    kept = [i for i, k in enumerate(rows["kept"]) if k]
    scores = [json.loads(rows["judges"][i]) for i in kept]

    # independently: the judge's network on its own chips of the photos and of the kept images
    net = JudgeModel().network()
    recon_dir = tmp_path / "kept"
    client.download_artifacts(run.info.run_id, "kept", str(tmp_path))
    for t, (first, others) in enumerate([("a", ["b", "c"]), ("c", [])]):
        kept_image = skimage.io.imread(recon_dir / f"target_{t}.png")[:, :, :3] / 255.0
        recon = unit(net(resize(kept_image[4:-4, 4:-4], 32)[None]).numpy())[0]
        refs = unit(net(np.stack([resize(photos[n], 32) for n in [first, *others]])).numpy())
        judged = scores[t]["tiny-judge"]
        # the kept PNG is 8-bit, so allow its rounding
        assert judged["type1"] == pytest.approx(float(refs[0] @ recon), abs=0.02)
        assert judged["type1_pass_fmr1e-2"] == (judged["type1"] >= 0.3)
        assert judged["type1_pass_fmr1e-3"] == (judged["type1"] >= 0.9)
        if others:
            np.testing.assert_allclose(judged["type2"], refs[1:] @ recon, atol=0.02)
            assert judged["type2_mean"] == pytest.approx(np.mean(judged["type2"]))
        else:
            assert "type2" not in judged
        h, w = kept_image.shape[:2]
        darker = kept_image[0, 0].mean() < kept_image[h // 2, w // 2].mean()
        assert scores[t]["corners"] == {"face": darker, "score": 0.75 if darker else 0.0}
    metrics = run.data.metrics
    assert metrics["judge/tiny-judge/type1"] == pytest.approx(
        np.mean([s["tiny-judge"]["type1"] for s in scores])
    )
    assert metrics["judge/tiny-judge/type2_mean/t0"] == pytest.approx(
        scores[0]["tiny-judge"]["type2_mean"]
    )
    assert "tiny-missing" not in json.dumps(scores)


def test_the_default_judges_are_the_available_calibrated_models(judges):
    from facerecon.core.registry import registry
    from facerecon.engine.validation import validate
    from facerecon.judges.scoring import judge_names

    reg = registry()
    chosen, skipped = judge_names(
        validate(
            {"name": "d", "model": {"name": "tiny"}, "targets": [{"image": "builtin:astronaut"}]}
        ),
        reg,
    )
    calibrated = [n for n in reg.names("model") if reg.get("model", n).thresholds]
    assert "tiny-judge" in chosen and "tiny" not in chosen
    assert skipped == {"tiny-missing": "its weights are not fetched (test)"}
    assert sorted([*chosen, *skipped]) == sorted(calibrated)
    # a judge is never the optimized model itself
    chosen, _ = judge_names(
        validate(
            {
                "name": "d",
                "model": {"name": "tiny-judge"},
                "targets": [{"image": "builtin:astronaut"}],
            }
        ),
        reg,
    )
    assert "tiny-judge" not in chosen


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"models": ["tiny-judg"]}, "judges.models[0]: unknown model 'tiny-judg'"),
        ({"models": ["tiny-missing"]}, "judge 'tiny-missing' is not available: its weights"),
        ({"detector": "corner"}, "judges.detector: unknown detector 'corner'"),
    ],
)
def test_bad_judges_are_one_line_and_leave_no_run(tmp_path, store, judges, section, message):
    for i, name in enumerate("abc"):
        photo(tmp_path / f"{name}.png", i)
    result = CliRunner().invoke(main, ["run", write(tmp_path, spec(tmp_path, **section))])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    client = MlflowClient(store)
    assert not [
        r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
    ]


def test_a_same_person_photo_without_a_face_stops_before_solving(tmp_path, store, judges):
    class NoFace(JudgeModel):
        name = "tiny-judge"

        def align(self, photo):
            return [] if photo.shape[0] == 41 else super().align(photo)

    for i, name in enumerate("ab"):
        photo(tmp_path / f"{name}.png", i)
    skimage.io.imsave(tmp_path / "c.png", np.zeros((41, 41, 3), np.uint8), check_contrast=False)
    pm = plugin_manager()
    pm.unregister(name="tests.judges")

    class Plugins:
        @hookimpl
        def register_models(self, register):
            register(NoFace)

        @hookimpl
        def register_detectors(self, register):
            register(Corners)

    pm.register(Plugins(), name="tests.judges")
    result = CliRunner().invoke(main, ["run", write(tmp_path, spec(tmp_path))])
    assert result.exit_code != 0
    assert "targets[0].same_person[1]" in result.output and "no face" in result.output
    assert "tiny-judge" in result.output


def test_impostor_rank_counts_other_peoples_photos_scoring_as_high(tmp_path, store, judges):
    photos = {name: photo(tmp_path / f"{name}.png", i) for i, name in enumerate("abc")}
    crowd = tmp_path / "crowd"
    crowd.mkdir()
    others = [photo(crowd / f"p{i}.png", 10 + i) for i in range(6)]
    skimage.io.imsave(crowd / "a.png", (photos["a"] * 255).round().astype(np.uint8))
    data = spec(tmp_path, models=["tiny-judge"], detector=None, impostors="crowd")
    data["targets"] = data["targets"][:1]
    data["tracking"] = {"enabled": False}
    result = api.run(validate(data, base_dir=tmp_path))
    judged = result.judges[0]["tiny-judge"]

    net = JudgeModel().network()
    recon = unit(net(resize(result.images[result.best[0]][4:-4, 4:-4], 32)[None]).numpy())[0]
    # the target's own photo in the crowd is left out: only the six others are impostors
    impostors = unit(net(np.stack([resize(o, 32) for o in others])).numpy()) @ recon
    assert judged["impostor_max"] == pytest.approx(float(impostors.max()), abs=1e-5)
    assert judged["type1_rank"] == 1 + int(np.sum(impostors >= judged["type1"]))
    assert judged["type2_rank"] == 1 + int(np.sum(impostors >= judged["type2_mean"]))


def test_a_collections_mean_face_is_cached_and_matches_numpy(tmp_path, monkeypatch):
    from facerecon.faces import photos as faces

    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path / "cache"))
    model = TinyModel()
    expected = np.mean(
        [resize(faces.as_rgb(im), 32) for im in faces.read_images("builtin:lfw")[:100]], axis=0
    )
    first = faces.mean_chip(model, "builtin:lfw", False)
    np.testing.assert_allclose(first, expected, atol=1e-5)
    (cached,) = (tmp_path / "cache" / "means").iterdir()
    np.save(cached, np.zeros_like(first))  # the second call reads the cache, not the photos
    assert np.all(faces.mean_chip(model, "builtin:lfw", False) == 0)


def test_sweep_summary_carries_each_variants_judge_means(tmp_path, store, judges):
    for i, name in enumerate("abc"):
        photo(tmp_path / f"{name}.png", i)
    data = spec(tmp_path, models=["tiny-judge"], detector=None)
    data["sweep"] = {"variants": [{"name": "slow", "set": {"solver.lr": 0.001}}, {"name": "fast"}]}
    data["sweep"]["variants"][1]["set"] = {"solver.lr": 0.05}
    ctx = api.sweep(validate(data, base_dir=tmp_path))
    client = MlflowClient(store)
    parent = ctx.extras["mlflow_run_id"]
    table = json.loads(Path(client.download_artifacts(parent, "summary.json")).read_text())
    rows = dict(zip(table["columns"], zip(*table["data"], strict=True), strict=True))
    for outcome, value in zip(ctx.outcomes, rows["judge/tiny-judge/type1"], strict=True):
        child = client.get_run(outcome.run_id)
        assert value == pytest.approx(child.data.metrics["judge/tiny-judge/type1"])
        assert outcome.judges["judge/tiny-judge/type1"] == pytest.approx(value)


def test_report_shows_the_judges_per_run_and_per_target(tmp_path, store, judges):
    for i, name in enumerate("abc"):
        photo(tmp_path / f"{name}.png", i)
    result = api.run(validate(spec(tmp_path), base_dir=tmp_path))
    api.report("judged", tmp_path / "out", log=False)
    with open(tmp_path / "out" / "table.csv") as f:
        (row,) = list(csv.DictReader(f))
    mean = np.mean([scores["tiny-judge"]["type1"] for scores in result.judges])
    assert float(row["judge/tiny-judge/type1"]) == pytest.approx(mean, abs=1e-4)
    assert float(row["judge/corners/face"]) == np.mean(
        [scores["corners"]["face"] for scores in result.judges]
    )
    with open(tmp_path / "out" / "targets.csv") as f:
        targets = list(csv.DictReader(f))
    assert [t["target"] for t in targets] == ["0", "1"]
    for t, scores in zip(targets, result.judges, strict=True):
        assert float(t["tiny-judge I"]) == pytest.approx(scores["tiny-judge"]["type1"], abs=1e-3)
        assert t["corners face"] == str(scores["corners"]["face"])
        assert float(t["distance"]) == pytest.approx(
            result.terms["distance"][result.best[int(t["target"])]], abs=1e-4
        )
    assert float(targets[0]["tiny-judge II"]) == pytest.approx(
        result.judges[0]["tiny-judge"]["type2_mean"], abs=1e-3
    )
    assert targets[1]["tiny-judge II"] == ""
