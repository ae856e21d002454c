"""End to end: `facerecon run` on the tiny model, read back from MLflow; failures; batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.io
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from facerecon import api, hookimpl
from facerecon.cli import main
from facerecon.core.registry import plugin_manager
from facerecon.engine.validation import validate

SPEC = {
    "name": "e2e",
    "model": {"name": "tiny"},
    "targets": [{"image": "builtin:astronaut"}, {"image": "builtin:grace-hopper"}],
    "guides": [
        {"image": "builtin:average-face", "align": False},
        {"image": "builtin:lfw/7", "align": False},
    ],
    "loss": {
        "metric": {"name": "l2"},
        "regularizers": [
            {"name": "tv", "weight": 0.01, "schedule": {"kind": "exponential", "rate": 0.98}},
            {"name": "guide", "weight": 0.1, "layers": {"conv1": 1.0, "pixels": 0.5}},
        ],
    },
    "solver": {"name": "adam", "steps": 12, "lr": 0.02, "lap_normalize": {"levels": 2}},
    "init": {"kind": "guide"},
    "seed": 3,
    "tracking": {"experiment": "e2e", "image_every": 5},
}


def write(tmp_path, spec) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def only_run(client):
    (exp,) = [e for e in client.search_experiments() if e.name == "e2e"]
    (run,) = client.search_runs([exp.experiment_id])
    return run


def test_cli_run_logs_everything_to_mlflow(tmp_path, store):
    result = CliRunner().invoke(main, ["run", write(tmp_path, SPEC)])
    assert result.exit_code == 0, result.output
    client = MlflowClient(store)
    run = only_run(client)
    assert run.info.status == "FINISHED"
    assert run.data.params["solver.lr"] == "0.02"
    assert run.data.params["loss.regularizers.0.schedule.rate"] == "0.98"
    tags = run.data.tags
    assert tags["facerecon.model"] == "tiny" and tags["facerecon.solver"] == "adam"
    assert tags["facerecon.regularizers"] == "tv,guide" and tags["facerecon.seed"] == "3"
    assert tags["facerecon.version"] and tags["mlflow.loggedImages"]
    for key in (
        "loss/total",
        "loss/embedding",
        "loss/tv",
        "loss/guide",
        "distance",
        "cosine",
    ):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == list(range(12)), key
    # the schedule's weights and the per-candidate breakdown go with the step images
    for key in ("cosine/t1-g0-r0", "weight/tv", "weight/guide"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [0, 5, 10, 11], key
    tv_weights = [m.value for m in client.get_metric_history(run.info.run_id, "weight/tv")]
    assert tv_weights == pytest.approx([0.01 * 0.98**t for t in (0, 5, 10, 11)])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"spec.yaml", "final.png", "candidates.png", "candidates.json", "kept"} <= artifacts
    loss_plot = client.download_artifacts(run.info.run_id, "plots/loss.png", str(tmp_path))
    curves = skimage.io.imread(loss_plot)[..., :3].astype(int)
    assert curves.shape == (252, 432, 3)  # 6 x 3.5 inches at 72 dpi
    # a line in each of matplotlib's first five colours: four terms and the distance
    for colour in ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)):
        assert (abs(curves - colour).sum(axis=-1) < 30).sum() > 20, colour
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    steps = sorted({int(p.split("+step+")[1].split("+")[0]) for p in images})
    assert steps == [0, 5, 10, 11]
    spec_back = yaml.safe_load(
        Path(client.download_artifacts(run.info.run_id, "spec.yaml", str(tmp_path))).read_text()
    )
    assert spec_back["solver"]["steps"] == 12 and spec_back["restarts"] == 1
    final = client.download_artifacts(run.info.run_id, "final.png", str(tmp_path))
    panel = skimage.io.imread(final)
    assert panel.shape[0] > panel.shape[1] / 3  # two rows: target | guide | reconstruction


class Recorder:
    def __init__(self):
        self.calls = []

    @hookimpl
    def before_run(self, context):
        self.calls.append("before_run")

    @hookimpl
    def after_step(self, context, step):
        self.calls.append("after_step")

    @hookimpl
    def after_run(self, context):
        self.calls.append("after_run")

    @hookimpl
    def on_error(self, context, error):
        self.calls.append(f"on_error:{type(error).__name__}")


@pytest.fixture
def recorder():
    rec = Recorder()
    plugin_manager().register(rec)
    yield rec
    plugin_manager().unregister(rec)


def test_lifecycle_hooks_fire_in_order(recorder):
    spec = validate({**SPEC, "tracking": {"enabled": False}})
    api.run(spec)
    assert recorder.calls == ["before_run"] + ["after_step"] * 12 + ["after_run"]


def test_batch_keeps_the_closest_candidate_per_target(recorder):
    spec = validate(
        {**SPEC, "restarts": 2, "init": {"kind": "noise"}, "tracking": {"enabled": False}}
    )
    result = api.run(spec)
    assert result.images.shape == (2 * 2 * 2, 32, 32, 3)
    distance = result.terms["distance"]
    assert result.best == [int(np.argmin(distance[:4])), 4 + int(np.argmin(distance[4:]))]
    assert np.all((result.images >= 0) & (result.images <= 1))


def test_a_failing_run_ends_its_mlflow_run_with_the_reason(tmp_path, store, recorder):
    class Boom:
        @hookimpl
        def after_step(self, context, step):
            if step.step == 4:
                raise RuntimeError("disk full")

    boom = Boom()
    plugin_manager().register(boom)
    try:
        with pytest.raises(RuntimeError, match="disk full"):
            api.run(validate(SPEC))
    finally:
        plugin_manager().unregister(boom)
    assert recorder.calls[-1] == "on_error:RuntimeError"
    client = MlflowClient(store)
    run = only_run(client)
    assert run.info.status == "FAILED"
    assert run.data.tags["facerecon.error"] == "RuntimeError: disk full"
    assert "last.png" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_tolerance_stops_early():
    spec = validate(
        {
            **SPEC,
            "solver": {"name": "sgd", "steps": 500, "lr": 1e-9, "tolerance": 1e-3, "patience": 3},
            "loss": {"regularizers": [{"name": "tv", "weight": 0.01}]},
            "tracking": {"enabled": False},
        }
    )
    result = api.run(spec)
    assert result.steps < 10 and result.stop_reason == "tolerance 0.001 reached"


def test_a_layer_the_model_cannot_tap_is_one_line_before_the_run(tmp_path):
    guide = {"name": "guide", "weight": 0.1, "layers": {"conv1": 1.0, "conv_2": 0.5}}
    raw = {**SPEC, "loss": {"regularizers": [{"name": "tv"}, guide]}}
    result = CliRunner().invoke(main, ["run", write(tmp_path, raw), "--no-track"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "error: loss.regularizers[1]: tiny has no layer 'conv_2' to tap "
        "(tappable: pixels, conv1, conv2, pool) (did you mean 'conv2' or 'conv1'?)"
    )


def test_embedding_targets_and_their_checks(tmp_path):
    e = np.random.default_rng(0).normal(size=(2, 16)).astype(np.float32)
    np.save(tmp_path / "e.npy", e)
    np.save(tmp_path / "wrong.npy", e[:, :8])
    np.save(tmp_path / "unit.npy", e / np.linalg.norm(e, axis=1, keepdims=True))
    np.save(tmp_path / "empty.npy", e[:0])
    np.save(tmp_path / "words.npy", np.array(["a", "b"]))
    np.savez(tmp_path / "e.npz", e=e)
    base = {
        **SPEC,
        "guides": [],
        "loss": {"regularizers": [{"name": "tv", "weight": 0.01}]},
        "init": {"kind": "noise"},
        "tracking": {"enabled": False},
    }
    spec = validate({**base, "targets": [{"embedding": "e.npy"}]}, base_dir=tmp_path)
    assert api.run(spec).images.shape[0] == 2
    unit = validate(
        {**base, "targets": [{"embedding": "unit.npy", "normalized": True}]}, base_dir=tmp_path
    )
    result = api.run(unit)
    # with `normalized: true`, F(p) is normalized before it is compared with the target
    raw = api.embed_images(result.images, "tiny")
    mine = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    goal = np.load(tmp_path / "unit.npy")
    np.testing.assert_allclose(
        result.terms["distance"], np.linalg.norm(mine - goal, axis=1), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(result.terms["cosine"], (mine * goal).sum(1), atol=1e-5)
    from facerecon.core.errors import FaceReconError

    for target, message in [
        (
            {"embedding": "wrong.npy"},
            r"wrong.npy: embedding of shape \(2, 8\); model 'tiny' "
            r"makes 16-d embeddings",
        ),
        ({"embedding": "e.npy", "normalized": True}, "`normalized: true` but the norms are"),
        ({"embedding": "nope.npy"}, "nope.npy: embedding file not found"),
        ({"embedding": "empty.npy"}, r"empty.npy: embedding of shape \(0, 16\) holds no rows"),
        ({"embedding": "words.npy"}, r"words.npy: embedding of dtype <U1; expected numbers"),
        ({"embedding": "e.npz"}, r"e.npz: an .npz archive \(e\); save one array with numpy.save"),
        ({"image": "nope.jpg"}, "nope.jpg: file not found"),
        ({"image": "builtin:astronot"}, "no such built-in face.*did you mean 'astronaut'"),
    ]:
        with pytest.raises(FaceReconError, match=message):
            api.run(validate({**base, "targets": [target]}, base_dir=tmp_path))


def test_cli_validate_layers_embed(tmp_path):
    runner = CliRunner()
    good = write(tmp_path, SPEC)
    ok = runner.invoke(main, ["validate", good])
    assert ok.exit_code == 0 and "ok" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "seed": "x", "solver": {"name": "adamm"}}))
    res = runner.invoke(main, ["validate", str(bad)])
    assert res.exit_code == 1
    assert "seed: Input should be a valid integer" in res.output
    assert "solver.name: unknown solver 'adamm'" in res.output and "Traceback" not in res.output
    layers = runner.invoke(main, ["layers", "tiny"])
    assert layers.exit_code == 0 and "conv1" in layers.output and "15x15x8" in layers.output
    out = tmp_path / "e.npy"
    emb = runner.invoke(main, ["embed", "builtin:astronaut", "--model", "tiny", "-o", str(out)])
    assert emb.exit_code == 0, emb.output
    assert np.load(out).shape == (16,)
    assert "face at (0, 0)-(512, 512)" in emb.output
    deep = tmp_path / "new" / "folder" / "e.npy"
    made = runner.invoke(main, ["embed", "builtin:astronaut", "--model", "tiny", "-o", str(deep)])
    assert made.exit_code == 0, made.output
    assert np.load(deep).shape == (16,) and str(deep) in made.output.replace("\n", "")
    txt = runner.invoke(
        main, ["embed", "builtin:astronaut", "--model", "tiny", "-o", str(tmp_path / "e.txt")]
    )
    assert txt.exit_code == 1 and "Traceback" not in txt.output
    assert "e.txt: embeddings are written as .npy; name the file *.npy" in txt.output
    assert not list(tmp_path.glob("e.txt*"))  # numpy would have written e.txt.npy


def test_restarts_from_one_start_image_are_not_identical_copies():
    from facerecon.engine.runner import prepare

    spec = validate(
        {**SPEC, "targets": SPEC["targets"][:1], "restarts": 3, "tracking": {"enabled": False}}
    )
    context, _, _ = prepare(spec)
    init = context.init
    assert init.shape == (2 * 3, 32, 32, 3) and init.dtype == np.float32
    for i, element in enumerate(context.elements):
        guide = context.guide_images[element.guide]
        if element.restart == 0:
            np.testing.assert_array_equal(init[i], guide)  # the first keeps the guide exactly
        else:  # the others start from seeded noise (std init.noise) around it
            assert 0.05 < np.std(init[i] - guide) < 0.15
    assert len({init[i].tobytes() for i in range(len(init))}) == len(init)
    again, _, _ = prepare(spec)
    np.testing.assert_array_equal(again.init, init)


def test_run_says_which_face_of_a_photo_it_used(tmp_path, store, monkeypatch):
    from facerecon import FaceChip
    from facerecon.faces.photos import resize

    from .tiny_model import TinyModel

    def two_faces(self, photo):
        h, w = photo.shape[:2]
        small = FaceChip(np.zeros((32, 32, 3), np.float32), (10, 20, 30, 40))
        return [FaceChip(resize(photo, 32), (0, 0, w, h)), small]

    monkeypatch.setattr(TinyModel, "align", two_faces)
    spec = {**SPEC, "solver": {"name": "adam", "steps": 2}}
    result = CliRunner().invoke(main, ["run", write(tmp_path, spec)])
    assert result.exit_code == 0, result.output
    note = "targets[0] builtin:astronaut: face at (0, 0)-(512, 512), the largest of 2 faces"
    assert note in result.output
    tags = only_run(MlflowClient(store)).data.tags
    assert tags["facerecon.target_faces"].startswith(note + "; targets[1] builtin:grace-hopper")


def _all_files(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    files = set()
    for item in client.list_artifacts(run_id, path):
        files |= _all_files(client, run_id, item.path) if item.is_dir else {item.path}
    return files


@pytest.mark.parametrize(
    ("policy", "faces"),
    [
        ("final", {"final.png", "candidates.png", "kept/target_0.png", "kept/target_1.png"}),
        ("none", set()),
    ],
)
def test_tracking_images_keeps_no_face_image_the_policy_forbids(store, policy, faces):
    spec = {
        **SPEC,
        "tracking": {**SPEC["tracking"], "images": policy},
        "sweep": {"grid": {"seed": [0, 1]}},
    }
    ctx = api.sweep(validate(spec))
    client = MlflowClient(store)
    parent = ctx.run_id
    (experiment,) = [e.experiment_id for e in client.search_experiments() if e.name == "e2e"]
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 2
    for child in children:
        files = _all_files(client, child.info.run_id)
        # what carries no face stays: the spec, the scores, the loss curves, the metrics
        assert {"spec.yaml", "candidates.json", "plots/loss.png"} <= files
        assert {f for f in files if f.endswith((".png", ".webp"))} - {"plots/loss.png"} == faces
        assert "final/distance" in child.data.metrics
        assert "mlflow.loggedImages" not in child.data.tags
    sheet = "contact_sheet.png" in _all_files(client, parent)
    assert sheet == (policy == "final")
