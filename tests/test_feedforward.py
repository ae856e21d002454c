"""The `feedforward` solver: generators, initialization, training, MLflow round trip,
evaluation, face transfer over frames, and its errors. Tiny model; generators only at the
real models' sizes."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from facerecon import api, hookimpl
from facerecon.cli import main
from facerecon.core.errors import FaceReconError
from facerecon.core.registry import plugin_manager
from facerecon.engine.validation import validate
from facerecon.faces import photos as faces
from facerecon_plugins.solvers.feedforward import store, training
from facerecon_plugins.solvers.feedforward.checkpoint import Checkpoints
from facerecon_plugins.solvers.feedforward.frames import pose_sequence, write_frames
from facerecon_plugins.solvers.feedforward.generator import (
    Generator,
    GeneratorConfig,
    smooth_kernel,
)
from facerecon_plugins.solvers.feedforward.inference import generate
from facerecon_plugins.solvers.feedforward.sampling import EmbeddingSampler, PhotoSampler
from facerecon_plugins.solvers.feedforward.training import (
    Settings,
    Trainer,
    distinct,
    metric_name,
    phases,
)

from . import experiments, tiny_model
from .experiments import validated

# Keras's own model saving (any model) trips this numpy 2 deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

LOSS = {
    "metric": {"name": "l2"},
    "regularizers": [
        {"name": "tv", "weight": 0.001},
        {"name": "guide", "weight": 0.1, "layers": {"conv1": 1.0}},
    ],
}
SPEC = {
    "name": "ff",
    "model": {"name": "tiny"},
    "targets": [{"image": "builtin:astronaut"}, {"image": "builtin:grace-hopper"}],
    "guides": [{"image": "builtin:average-face", "align": False}],
    "loss": LOSS,
    "solver": {
        "name": "feedforward",
        "generator": {"filters": 8, "depth": 2},
        "steps": 40,
        "batch": 8,
        "lr": 0.003,
        "report_every": 5,
    },
    "tracking": {"experiment": "ff", "image_every": 10},
}


def config(size: int, dim: int, kind: str = "embedding", init: str = "interpolation", **kw):
    values = {"filters": 6, "depth": 5, "guide_filters": 4, **kw}
    return GeneratorConfig(
        kind=kind, init=init, model="m", input_size=size, embedding_size=dim, **values
    )


class Steps:
    """Records what a solver reports; can interrupt at a given step."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.steps, self.stop_at = [], stop_at

    @hookimpl
    def after_step(self, context, step):
        self.steps.append(step)
        if step.step == self.stop_at:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tracked training on the tiny model, shared: (result, reported steps, store uri,
    folder)."""
    folder = tmp_path_factory.mktemp("ff")
    uri = f"sqlite:///{folder}/mlflow.db"
    if not plugin_manager().is_registered(tiny_model):  # module fixtures precede `tiny`
        plugin_manager().register(tiny_model, name="tests.tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(folder)
        rec = Steps()
        plugin_manager().register(rec)
        try:
            result = api.run(validate(SPEC))
        finally:
            plugin_manager().unregister(rec)
    return result, rec.steps, uri, folder


@pytest.fixture
def in_store(trained, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained[2])
    monkeypatch.chdir(trained[3])
    return trained


# ---- architecture ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "dim", "base", "canvas"),
    [(32, 16, 1, 32), (150, 128, 5, 160), (160, 512, 5, 160)],  # tiny, dlib-resnet, facenet
)
@pytest.mark.parametrize("kind", ["embedding", "guided"])
def test_shapes_and_crop_at_each_model_size(size, dim, base, canvas, kind):
    c = config(size, dim, kind)
    assert (c.base, c.canvas) == (base, canvas)
    net = Generator.build(c).network
    assert net.get_layer("reshape").output.shape[1:] == (base, base, 6)
    ups = [net.get_layer(f"up{i + 1}").output.shape[1] for i in range(5)]
    assert ups == [base * 2 ** (i + 1) for i in range(5)]
    assert net.get_layer("sigmoid").output.shape[1:3] == (canvas, canvas)
    assert net.output.shape[1:] == (size, size, 3)
    if kind == "guided":
        assert [i.name for i in net.inputs] == ["embedding", "guide"]
        downs = [net.get_layer(f"guide_down{i + 1}").output.shape[1] for i in range(5)]
        assert downs == [canvas // 2 ** (i + 1) for i in range(5)]


def test_crop_keeps_the_guide_in_place():
    # The guided generator starts as (roughly) its guide: a bright dot must stay where it was,
    # which only holds if padding and cropping are the same centred offsets.
    gen = Generator.build(config(150, 128, "guided"))
    guide = np.zeros((150, 150, 3), np.float32)
    guide[37, 101] = 1.0
    out = gen.generate(np.full((1, 128), 0.1, np.float32), guide)[0]
    assert np.unravel_index(np.argmax(out[..., 0]), (150, 150)) == (37, 101)


def _linear_part(layer, x):
    return (
        tf.nn.conv2d_transpose(x, layer.kernel, (1, 16, 16, layer.kernel.shape[2]), 2, "SAME")
        + layer.bias
    ).numpy()


def _chaikin(x):
    """Reference 2x upsampling on the last-but-one axes: output pixel n sits at input
    position (n - 1/2) / 2, taking 3/4 of the nearer pixel and 1/4 of the farther one."""
    for axis in (1, 2):
        near = np.repeat(x, 2, axis=axis)
        idx = np.arange(near.shape[axis])
        far_idx = np.clip(np.where(idx % 2 == 0, idx // 2 - 1, idx // 2 + 1), 0, x.shape[axis] - 1)
        x = 0.75 * near + 0.25 * np.take(x, far_idx, axis=axis)
    return x


def test_interpolation_init_is_smooth_upsampling_with_xavier_mixing():
    net = Generator.build(config(32, 16, depth=2, filters=12)).network
    layer = net.get_layer("up1")
    kernel = layer.kernel.numpy()  # (5, 5, out, in)
    mixing = kernel.sum(axis=(0, 1)) / 4.0
    # every filter pair is the one smooth kernel times its mixing weight
    np.testing.assert_allclose(kernel, smooth_kernel()[:, :, None, None] * mixing, atol=1e-6)
    limit = math.sqrt(6 / (12 + 12))
    assert np.abs(mixing).max() <= limit and mixing.std() > limit / 3  # random Xavier
    rng = np.random.default_rng(0)
    x = rng.random((1, 8, 8, 12)).astype(np.float32)
    expected = np.einsum("bhwi,oi->bhwo", _chaikin(x), mixing)
    out = _linear_part(layer, tf.constant(x))
    np.testing.assert_allclose(out[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], atol=1e-5)
    # a linear ramp stays a linear ramp (no checkerboard); the plain init does not do this
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[None, None, :, None], (1, 8, 8, 12))
    second = np.diff(_linear_part(layer, tf.constant(ramp))[0, 2:-2, 2:-2], 2, axis=1)
    assert np.abs(second).max() < 1e-4
    plain = Generator.build(config(32, 16, depth=2, filters=12, init="plain")).network
    rough = np.diff(_linear_part(plain.get_layer("up1"), tf.constant(ramp))[0, 2:-2, 2:-2], 2, 1)
    assert np.abs(rough).max() > 0.1


def test_the_image_starts_out_gray_and_smooth():
    gen = Generator.build(config(150, 128, filters=8))
    out = gen.generate(np.random.default_rng(1).normal(size=(2, 128)).astype(np.float32))
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert abs(float(out.mean()) - 0.5) < 0.1
    plain = Generator.build(config(150, 128, filters=8, init="plain"))
    colour = plain.generate(np.ones((1, 128), np.float32))
    assert np.abs(colour[..., 0] - colour[..., 1]).max() > 1e-3


def test_samplers_match_the_real_faces_statistics():
    rng = np.random.default_rng(0)
    faces = rng.normal(size=(400, 8)) * np.linspace(0.5, 2, 8) + 3.0
    gauss = EmbeddingSampler("gaussian", faces, shrinkage=0.0)
    drawn = gauss.sample(rng, 4000)
    np.testing.assert_allclose(drawn.mean(0), faces.mean(0), atol=0.15)
    np.testing.assert_allclose(drawn.std(0), faces.std(0), rtol=0.1)
    directions = EmbeddingSampler("directions", faces).sample(rng, 100)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), gauss.norm, rtol=1e-5)
    assert abs(float(directions.mean())) < 0.1 * gauss.norm  # centred on 0, not on the faces


def test_guides_take_turns_in_the_training_batch():
    guides = np.arange(5, dtype=np.float32)[:, None, None, None] * np.ones((5, 2, 2, 3))
    layouts = phases(np.concatenate([guides, guides[:2]]), batch=3)  # per-element, repeats
    assert [g[:, 0, 0, 0].tolist() for g in layouts] == [[0, 1, 2], [3, 4, 0]]
    assert phases(None, 4) == [None]
    # fewer guides than a batch: one phase, cycled; as many as two batches: two phases
    assert [g[:, 0, 0, 0].tolist() for g in phases(guides[:2], 5)] == [[0, 1, 0, 1, 0]]
    assert [g[:, 0, 0, 0].tolist() for g in phases(guides[:4], 2)] == [[0, 1], [2, 3]]


def test_distinct_guides_come_in_the_order_of_their_first_use():
    guides = np.zeros((4, 2, 2, 3), np.float32)
    guides[:, 1, 0, 2] = [2, 0, 3, 1]  # they differ in one value only
    per_element = guides[[0, 1, 0, 2, 3, 1, 2]]
    np.testing.assert_array_equal(distinct(per_element), guides)
    np.testing.assert_array_equal(distinct(guides[[3, 3, 1]]), guides[[3, 1]])


def test_the_rate_in_force_is_the_last_drop_at_or_before_the_step():
    settings = Settings(10, 1, 0.1, 0, 1, 1, lr_drops={7: 0.001, 3: 0.01})
    assert [settings.lr_at(t) for t in range(10)] == [0.1] * 3 + [0.01] * 4 + [0.001] * 3
    plain = Settings(10, 1, 0.1, 0, 1, 1)
    assert [plain.lr_at(t) for t in (0, 9)] == [0.1, 0.1]
    assert (plain.guide_weight, plain.photo_weight, plain.photo_layers, plain.lr_drops) == (
        0.0,
        0.0,
        {},
        {},
    )


def test_distance_and_cosine_keep_their_names_in_logs_and_the_other_terms_are_losses():
    names = [metric_name(k) for k in ("distance", "cosine", "total", "tv", "cosines")]
    assert names == ["distance", "cosine", "loss/total", "loss/tv", "loss/cosines"]


# ---- the training loop, on a stand-in objective ------------------------------------------

FACES = np.random.default_rng(3).normal(1.0, 2.0, size=(40, 16))  # embeddings to sample around
TARGETS = np.random.default_rng(4).normal(size=(2, 16)).astype(np.float32)
SEED, BATCH, LR = 5, 3, 0.01


class Clock:
    """A stand-in objective whose terms have closed forms: ``pull`` draws every image to a
    dark grey, ``embedding`` is each target's mean (in training, the sampled embedding's) and
    ``clock`` the step, read from the step's seed (-1 in the probes, which have none).
    ``pull`` weighs 1 + step, and infinitely much at step ``blow_up_at``."""

    labels = ["pull"]
    guides = None
    model = None

    def __init__(self, blow_up_at: int | None = None) -> None:
        self.targets = tf.constant(TARGETS)
        self.blow_up_at = blow_up_at

    def for_batch(self, size: int, guides: np.ndarray | None) -> Clock:
        return self

    def weights_at(self, step: int) -> np.ndarray:
        return np.array([math.inf if step == self.blow_up_at else 1.0 + step], np.float32)

    def step_seed(self, step: int) -> np.ndarray:
        return np.array([7, step], np.int32)

    def __call__(self, images, weights, targets=None, seed=None) -> dict[str, tf.Tensor]:
        targets = self.targets if targets is None else targets
        pull = tf.reduce_mean(tf.square(images - 0.2), axis=[1, 2, 3])
        clock = tf.zeros_like(pull) + (-1.0 if seed is None else tf.cast(seed[1], tf.float32))
        return {
            "total": weights[0] * pull,
            "embedding": tf.reduce_mean(targets, axis=1),
            "pull": pull,
            "clock": clock,
            "distance": clock + 0.5,
            "cosine": -clock,
        }


class Ticks:
    """Stands in for the training module's ``time``: a clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


class Drawing:
    """A sampler whose draws take ``seconds`` of a ``Ticks`` clock, or raise
    KeyboardInterrupt at the draw of step ``interrupt_at``."""

    def __init__(self, sampler, clock=None, seconds=0.0, interrupt_at=None) -> None:
        self.sampler, self.clock, self.seconds = sampler, clock, seconds
        self.mean, self.variance = sampler.mean, sampler.variance
        self.draws, self.interrupt_at = 0, interrupt_at

    def draw(self, rng, n):
        if self.draws == self.interrupt_at:
            raise KeyboardInterrupt
        self.draws += 1
        if self.clock is not None:
            self.clock.now += self.seconds
        return self.sampler.draw(rng, n)


def embeddings() -> EmbeddingSampler:
    return EmbeddingSampler("gaussian", FACES)


def untrained(sampler) -> Generator:
    return Generator.build(config(32, 16, filters=4, depth=2), sampler.mean, sampler.variance, 1)


def loop(steps, folder=None, objective=None, sampler=None, **settings) -> Trainer:
    """A trainer of a small generator, the same one each time, on ``Clock``."""
    sampler = sampler or embeddings()
    settings = {"report_every": 1, "checkpoint_every": 100, **settings}
    every = settings.pop("report_every"), settings.pop("checkpoint_every")
    return Trainer(
        untrained(sampler),
        objective or Clock(),
        sampler,
        Settings(steps, BATCH, LR, SEED, *every, **settings),
        None if folder is None else Checkpoints(folder),
    )


class Seen(list):
    """The reports of a training, with the optimizer's rate at each; can interrupt one."""

    def __init__(self, trainer: Trainer, stop_at: int | None = None) -> None:
        super().__init__()
        self.trainer, self.stop_at, self.rates = trainer, stop_at, []

    def __call__(self, info) -> None:
        self.append(info)
        self.rates.append(float(self.trainer.optimizer.learning_rate))
        if info.step == self.stop_at:
            raise KeyboardInterrupt


def saved(folder: Path) -> list[int]:
    """The steps of the checkpoints kept in a folder."""
    return sorted(int(p.name[len("ckpt-") : -len(".index")]) for p in folder.glob("ckpt-*.index"))


def test_a_report_gives_its_windows_mean_terms_the_optimizers_rate_and_the_speed(monkeypatch):
    ticks = Ticks()
    monkeypatch.setattr(training, "time", ticks)
    sampler = Drawing(embeddings(), ticks, seconds=0.25)  # each step takes a quarter second
    trainer = loop(
        8, sampler=sampler, report_every=3, checkpoint_every=4, lr_drops={7: 2e-3, 3: 4e-3}
    )
    # none done yet; int64, as the checkpoints written so far hold it (int32 cannot restore it)
    assert int(trainer.step.numpy()) == 0 and trainer.step.dtype == tf.int64
    start = untrained(sampler)
    seen = Seen(trainer)
    assert trainer.run(seen) == (8, "max steps")
    assert [s.step for s in seen] == [0, 3, 6, 7]
    assert int(trainer.step.numpy()) == 8
    windows, rates = [[0], [1, 2, 3], [4, 5, 6], [7]], [LR, 4e-3, 4e-3, 2e-3]
    for info, window, rate, actual in zip(seen, windows, rates, seen.rates, strict=True):
        m = info.metrics
        assert set(m) == {
            "train/loss/total",
            "train/loss/embedding",
            "train/loss/pull",
            "train/loss/clock",
            "train/distance",
            "train/cosine",
            "train/steps_per_second",
            "train/lr",
        }
        drawn = [embeddings().sample(np.random.default_rng([SEED, t]), BATCH) for t in window]
        assert m["train/loss/embedding"] == pytest.approx(np.mean(drawn), rel=1e-5, abs=1e-6)
        assert m["train/loss/clock"] == pytest.approx(np.mean(window))
        assert m["train/distance"] == pytest.approx(np.mean(window) + 0.5)
        assert m["train/cosine"] == pytest.approx(-np.mean(window))
        assert m["train/steps_per_second"] == pytest.approx(4.0)
        # the logged rate is the one the optimizer trained the window's last step at
        assert actual == pytest.approx(rate, rel=1e-6) and m["train/lr"] == actual
        # the probes: the targets, at the step's weights, without a seed
        assert info.weights == {"pull": 1.0 + info.step}
        np.testing.assert_allclose(info.terms["embedding"], TARGETS.mean(1), rtol=1e-5)
        np.testing.assert_array_equal(info.terms["clock"], [-1.0, -1.0])
    # step 0 alone: the untrained generator's images of the first batch
    first = np.asarray(start.network([drawn_at(0)]))
    pull = float(np.mean((first - 0.2) ** 2))
    assert seen[0].metrics["train/loss/pull"] == pytest.approx(pull, rel=1e-4)
    assert seen[0].metrics["train/loss/total"] == pytest.approx(pull, rel=1e-4)  # weight 1
    assert seen[-1].metrics["train/loss/pull"] < 0.5 * pull
    # a report shows the images after its step's update
    assert np.abs(seen[0].images - start.generate(TARGETS)).max() > 1e-3
    np.testing.assert_allclose(seen[-1].images, trainer.generator.generate(TARGETS), atol=1e-6)


def drawn_at(step: int) -> np.ndarray:
    """The batch of embeddings that step ``step`` trains on."""
    return embeddings().sample(np.random.default_rng([SEED, step]), BATCH)


def test_a_resume_trains_at_its_own_schedules_rate_whatever_the_checkpoint_held(tmp_path):
    first = loop(5, tmp_path)  # no drops: LR throughout, saved at step 5
    before = Seen(first)
    first.run(before)
    assert saved(tmp_path) == [5]
    # a drop to 1e-20 from step 3, which the checkpoint has passed: step 5 trains at it
    frozen = loop(6, tmp_path, lr_drops={3: 1e-20})
    seen = Seen(frozen)
    assert frozen.run(seen) == (6, "max steps")
    assert [s.step for s in seen] == [5]
    assert seen.rates == [pytest.approx(1e-20, rel=1e-6)]
    assert seen[0].metrics["train/lr"] == seen.rates[0]
    np.testing.assert_allclose(seen[0].images, before[-1].images, atol=1e-6)  # nothing moved
    # without that drop the checkpoint's 1e-20 is left behind: LR, then a drop of its own
    moving = loop(8, tmp_path, lr_drops={7: 2e-3})
    seen = Seen(moving)
    assert moving.run(seen) == (8, "max steps")
    assert [s.step for s in seen] == [6, 7]
    assert seen.rates == [pytest.approx(LR, rel=1e-6), pytest.approx(2e-3, rel=1e-6)]
    assert [s.metrics["train/lr"] for s in seen] == seen.rates
    assert np.abs(seen[0].images - before[-1].images).max() > 1e-3


def test_a_finished_training_resumed_reports_its_last_step_and_writes_nothing(tmp_path):
    done = loop(2, tmp_path)
    before = Seen(done)
    done.run(before)
    index = tmp_path / "ckpt-2.index"
    written = index.stat().st_mtime_ns
    again = loop(2, tmp_path)
    seen = Seen(again)
    assert again.run(seen) == (2, "already trained 2 steps")
    assert [(s.step, s.metrics) for s in seen] == [(1, {})]
    np.testing.assert_allclose(seen[0].images, before[-1].images, atol=1e-6)
    assert math.isnan(again.steps_per_second) and int(again.step.numpy()) == 2
    assert saved(tmp_path) == [2] and index.stat().st_mtime_ns == written


def test_an_interruption_saves_the_steps_done_and_the_resume_ends_as_an_unbroken_run(tmp_path):
    broken = loop(8, tmp_path / "ck", report_every=2)
    with pytest.raises(KeyboardInterrupt):
        broken.run(Seen(broken, stop_at=4))
    assert saved(tmp_path / "ck") == [5]  # steps 0..4 done
    resumed = loop(8, tmp_path / "ck", report_every=2)
    seen = Seen(resumed)
    assert resumed.run(seen) == (8, "max steps")
    assert [s.step for s in seen] == [6, 7]
    assert seen[0].metrics["train/loss/clock"] == pytest.approx(5.5)  # steps 5 and 6
    whole = loop(8, report_every=2)
    unbroken = Seen(whole)
    whole.run(unbroken)
    np.testing.assert_allclose(seen[-1].images, unbroken[-1].images, atol=1e-5)
    # interrupted before its first step is done, a training leaves no checkpoint
    early = loop(8, tmp_path / "early", sampler=Drawing(embeddings(), interrupt_at=0))
    with pytest.raises(KeyboardInterrupt):
        early.run(Seen(early))
    assert saved(tmp_path / "early") == []
    # and without a folder for checkpoints, the interruption comes through as it was
    bare = loop(8)
    with pytest.raises(KeyboardInterrupt):
        bare.run(Seen(bare, stop_at=2))


def test_a_loss_that_is_not_finite_stops_the_training_on_the_last_good_weights(tmp_path):
    start = loop(3, tmp_path)
    start.run(Seen(start))
    trainer = loop(9, tmp_path, Clock(blow_up_at=5), report_every=5, checkpoint_every=2)
    seen = Seen(trainer)
    assert trainer.run(seen) == (5, "diverged at step 5 (loss is not finite)")
    # steps 3 and 4 were done and not reported yet: they are, once
    assert [s.step for s in seen] == [4]
    assert seen[0].metrics["train/loss/clock"] == pytest.approx(3.5)
    assert int(trainer.step.numpy()) == 5
    # the images are those of the weights after step 4, not of the update at step 5
    assert np.isfinite(seen[0].images).all()
    np.testing.assert_allclose(trainer.generator.generate(TARGETS), seen[0].images, atol=1e-6)
    assert saved(tmp_path) == [3, 4]  # step 4's periodic checkpoint, nothing after
    # not finite at the very first step: nothing trained, step 0 reported without metrics
    first = loop(4, objective=Clock(blow_up_at=0))
    seen = Seen(first)
    assert first.run(seen) == (0, "diverged at step 0 (loss is not finite)")
    assert [(s.step, s.metrics) for s in seen] == [(0, {})]
    np.testing.assert_allclose(seen[0].images, untrained(embeddings()).generate(TARGETS), atol=1e-6)
    assert math.isnan(first.steps_per_second)


def test_photos_without_layers_add_the_pixel_term_alone():
    rng = np.random.default_rng(6)
    photos = rng.random((6, 32, 32, 3)).astype(np.float32)
    sampler = PhotoSampler(rng.normal(size=(6, 16)), photos)
    trainer = loop(1, sampler=sampler, photo_weight=0.5)
    seen = Seen(trainer)
    assert trainer.run(seen) == (1, "max steps")
    m = seen[0].metrics
    assert {k for k in m if k.startswith("train/loss/")} == {
        "train/loss/total",
        "train/loss/embedding",
        "train/loss/pull",
        "train/loss/clock",
        "train/loss/photo_pixels",
    }
    sampled, held = sampler.draw(np.random.default_rng([SEED, 0]), BATCH)
    images = np.asarray(untrained(sampler).network([sampled]))
    pixels = float(np.mean(np.abs(images - held)))
    assert m["train/loss/photo_pixels"] == pytest.approx(pixels, rel=1e-4)
    pull = float(np.mean((images - 0.2) ** 2))
    assert m["train/loss/total"] == pytest.approx(pull + 0.5 * pixels, rel=1e-4)


# ---- training, tracking, generation -----------------------------------------------------


def test_training_lowers_the_loss_and_logs_to_mlflow(trained):
    result, reported, uri, _ = trained
    assert [s.step for s in reported] == [0, 5, 10, 15, 20, 25, 30, 35, 39]
    first, last = reported[0].metrics, reported[-1].metrics
    assert last["train/loss/total"] < 0.6 * first["train/loss/total"]
    assert reported[-1].terms["total"].mean() < 0.6 * reported[0].terms["total"].mean()
    assert result.images.shape == (2, 32, 32, 3) and result.steps == 40
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["facerecon.solver"] == "feedforward"
    assert (
        "embedding generator (8 filters, depth 2) for tiny" in run.data.tags["facerecon.generator"]
    )
    history = client.get_metric_history(result.run_id, "train/loss/total")
    assert [m.step for m in history] == [s.step for s in reported]
    probes = [m.step for m in client.get_metric_history(result.run_id, "cosine")]
    assert probes == [s.step for s in reported]
    # Per-target terms are logged at the image steps (and the last) only.
    per_target = [m.step for m in client.get_metric_history(result.run_id, "cosine/t1-g0-r0")]
    assert per_target == [0, 10, 20, 30, 39]
    images = [a.path for a in client.list_artifacts(result.run_id, "images")]
    assert sorted({int(p.split("+step+")[1].split("+")[0]) for p in images}) == [0, 10, 20, 30, 39]
    model = {a.path for a in client.list_artifacts(result.run_id, "generator")}
    assert {"generator/MLmodel", "generator/data"} <= model


def test_generator_round_trips_through_mlflow_with_identical_outputs(in_store, tmp_path):
    result = in_store[0]
    uri = f"runs:/{result.run_id}/generator"
    loaded = store.load(uri)
    assert loaded.config == result.extras["generator"].config
    from mlflow.models import Model

    signature = Model.load(uri).signature.to_dict()
    assert '"name": "embedding"' in signature["inputs"] and "[-1, 16]" in signature["inputs"]
    assert "[-1, 32, 32, 3]" in signature["outputs"]
    targets = np.stack(
        [api.embed(p, model_name="tiny")[0] for p in ("builtin:astronaut", "builtin:grace-hopper")]
    )
    np.save(tmp_path / "e.npy", targets)
    made = api.generate(uri, tmp_path / "e.npy", output=tmp_path / "out.png")
    np.testing.assert_allclose(made.images, result.images, atol=1e-6)
    fresh = result.extras["generator"].generate(targets)
    np.testing.assert_allclose(made.images, fresh, atol=1e-6)
    assert [p.name for p in made.paths] == ["out-000.png", "out-001.png"]
    one = CliRunner().invoke(
        main, ["generate", "-g", uri, "--photo", "builtin:astronaut", "-o", str(tmp_path / "a.png")]
    )
    assert one.exit_code == 0, one.output
    assert "1 image(s)" in one.output and "images/s at batch 32" in one.output
    import skimage.io

    written = skimage.io.imread(tmp_path / "a.png")
    np.testing.assert_allclose(written / 255.0, result.images[0], atol=1 / 255)


def test_evaluation_numbers_match_a_direct_computation(in_store, tmp_path):
    result, _, uri, _ = in_store
    spec = {
        **SPEC,
        "name": "ff-eval",
        "targets": [{"image": f"builtin:lfw/{i}", "align": False} for i in (60, 70, 80)],
        "solver": {"name": "adam", "steps": 5, "lr": 0.02},
        "init": {"kind": "guide"},
        "judges": {"models": ["tiny"], "detector": None},
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(spec))
    gen_uri = f"runs:/{result.run_id}/generator"
    res = CliRunner().invoke(main, ["evaluate", str(path), "-g", gen_uri, "--threshold", "0.05"])
    assert res.exit_code == 0, res.output
    client = MlflowClient(uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "ff"]
    runs = client.search_runs([exp.experiment_id], "tags.`facerecon.kind` = 'evaluation'")
    (run,) = runs
    summary = client.load_table(exp.experiment_id, "summary.json", run_ids=[run.info.run_id])
    rows = {r["method"]: r for r in summary.to_dict("records")}
    assert set(rows) == {"g0", "iterative", "guide"}
    # direct: generate, embed with the model, compare with the targets
    model = api.model("tiny")
    targets = api.embed_images(np.stack(_lfw_chips(model, (60, 70, 80))), "tiny")
    images = store.load(gen_uri).generate(targets)
    embeddings = api.embed_images(images, "tiny")
    distance = np.linalg.norm(embeddings - targets, axis=1)
    cosine = np.sum(_unit(embeddings) * _unit(targets), axis=1)
    g0 = rows["g0"]
    assert g0["mean_distance"] == pytest.approx(distance.mean(), rel=1e-4)
    assert g0["mean_cosine"] == pytest.approx(cosine.mean(), rel=1e-4)
    assert g0["verified"] == pytest.approx(np.mean(distance < 0.05))
    # the judge (here the model itself) scores each image against its target photo
    assert g0["judge/tiny/type1"] == pytest.approx(cosine.mean(), abs=1e-5)
    tv = sum(np.sum(np.diff(images, axis=a) ** 2, (1, 2, 3)) for a in (1, 2))
    guide_chip = faces.resize(faces.read_image("builtin:average-face"), 32)
    conv1 = _conv1(model)
    guide = np.mean((conv1(images) - conv1(guide_chip[None])) ** 2, axis=(1, 2, 3))
    total = distance**2 + 0.001 * tv + 0.1 * guide
    assert g0["mean_total"] == pytest.approx(total.mean(), rel=1e-3)
    table = client.load_table(exp.experiment_id, "evaluation.json", run_ids=[run.info.run_id])
    it = table[table["method"] == "iterative"]["total"].to_numpy()
    iterative_run = run.data.tags["facerecon.iterative_run"]
    candidates = client.load_table(exp.experiment_id, "candidates.json", run_ids=[iterative_run])
    np.testing.assert_allclose(it, candidates["total"].to_numpy(), rtol=1e-5)
    assert g0["loss_ratio"] == pytest.approx(total.mean() / it.mean(), rel=1e-3)
    guide_distance = np.linalg.norm(api.embed_images(guide_chip[None], "tiny") - targets, axis=1)
    assert rows["guide"]["mean_distance"] == pytest.approx(guide_distance.mean(), rel=1e-4)
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"fig10_scatter.png", "reconstructions.png", "evaluation.json"} <= arts
    assert "g0" in res.output and "iterative" in res.output


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _lfw_chips(model, indices):
    return [faces.chip(model, faces.read_image(f"builtin:lfw/{i}"), False, "")[0] for i in indices]


def _conv1(model):
    import keras

    net = model.network()
    sub = keras.Model(net.input, net.get_layer("conv1").output)
    return lambda images: sub(images, training=False).numpy()


# ---- face transfer over frames (Fig. 11) -------------------------------------------------


def test_guided_generator_on_frames_logs_the_transfer_as_a_gif(tmp_path, in_store):
    chip = faces.resize(faces.read_image("builtin:lfw/3"), 32)
    write_frames(pose_sequence(chip, count=4), tmp_path / "frames")
    spec = {
        **SPEC,
        "name": "ff-transfer",
        "targets": [{"image": "builtin:lfw/90", "align": False}],
        "guides": [{"image": "frames", "align": False}],
        "loss": {**LOSS, "regularizers": [{"name": "guide", "weight": 0.5}]},
        "solver": {
            **SPEC["solver"],
            "generator": {"kind": "guided", "filters": 6, "depth": 2},
            "steps": 6,
            "batch": 4,
            "report_every": 3,
        },
    }
    result = api.run(validate(spec, base_dir=tmp_path))
    assert result.images.shape == (4, 32, 32, 3)  # the unseen target on every frame
    client = MlflowClient(in_store[2])
    gifs = [a.path for a in client.list_artifacts(result.run_id, "transfer")]
    assert gifs == ["transfer/target0.gif"]
    from PIL import Image

    with Image.open(client.download_artifacts(result.run_id, gifs[0])) as gif:
        assert gif.n_frames == 4


def test_a_video_file_names_its_frames(tmp_path):
    import cv2

    frames = pose_sequence(faces.resize(faces.read_image("builtin:astronaut"), 64), 5) * 255
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for frame in frames.astype(np.uint8):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    read = faces.read_images("clip.avi", tmp_path)
    assert len(read) == 5 and read[0].shape == (64, 64, 3)
    assert np.abs(read[2] - frames[2] / 255).mean() < 0.05


# ---- bad input ------------------------------------------------------------------------


def test_generator_for_another_model_is_refused_naming_both(in_store, tmp_path):
    gen = store.load(f"runs:/{in_store[0].run_id}/generator")

    class Other:
        name, input_size, embedding_size = "dlib-resnet", 150, 128

    with pytest.raises(FaceReconError) as err:
        gen.check_model(Other(), "runs:/x/generator")
    assert str(err.value) == (
        "runs:/x/generator: made for model 'tiny' (32x32 in, 16-d), but the model here is "
        "'dlib-resnet' (150x150 in, 128-d)"
    )
    np.save(tmp_path / "e64.npy", np.zeros(64, np.float32))
    res = CliRunner().invoke(
        main,
        [
            "generate",
            "-g",
            f"runs:/{in_store[0].run_id}/generator",
            "--embedding",
            str(tmp_path / "e64.npy"),
            "-o",
            "x.png",
        ],
    )
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "e64.npy: embedding of shape (64,); the generator takes 16-d embeddings" in res.output
    guided = CliRunner().invoke(
        main,
        [
            "generate",
            "-g",
            f"runs:/{in_store[0].run_id}/generator",
            "--photo",
            "builtin:astronaut",
            "--guide",
            "builtin:grace-hopper",
            "-o",
            "x.png",
        ],
    )
    assert guided.exit_code == 1 and "takes no guide image" in guided.output
    missing = CliRunner().invoke(
        main,
        [
            "generate",
            "-g",
            str(tmp_path / "nothing"),
            "--photo",
            "builtin:astronaut",
            "-o",
            "x.png",
        ],
    )
    assert missing.exit_code == 1 and "no MLflow model there" in missing.output


def test_empty_strings_or_nan_embeddings_are_refused_in_one_line(tmp_path):
    gen = Generator.build(config(32, 16, filters=4))
    np.save(tmp_path / "empty.npy", np.zeros((0, 16), np.float32))
    np.save(tmp_path / "words.npy", np.array(["x"] * 16))
    np.savez(tmp_path / "two.npz", a=np.zeros(16), b=np.ones(16))
    nan = np.zeros((2, 16), np.float32)
    nan[1, 3] = np.nan
    for source, message in [
        (tmp_path / "empty.npy", r"empty.npy: embedding of shape \(0, 16\) holds no rows"),
        (tmp_path / "words.npy", r"words.npy: embedding of dtype <U1; expected numbers"),
        (tmp_path / "two.npz", r"two.npz: an .npz archive \(a, b\); save one array"),
        (nan, r"^embedding: embedding holds NaN or infinite values$"),
        (np.zeros((0, 16), np.float32), r"^embedding: embedding of shape \(0, 16\) holds no"),
    ]:
        with pytest.raises(FaceReconError, match=message):
            generate(gen, source, output=tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


def test_interrupted_training_keeps_its_checkpoint_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = {
        **SPEC,
        "solver": {
            **SPEC["solver"],
            "steps": 12,
            "report_every": 3,
            "checkpoints": "ck",
            "checkpoint_every": 100,
        },
        "tracking": {"enabled": False},
    }
    stopper = Steps(stop_at=6)
    plugin_manager().register(stopper)
    try:
        with pytest.raises(KeyboardInterrupt):
            api.run(validate(spec))
    finally:
        plugin_manager().unregister(stopper)
    assert (tmp_path / "ck" / "ckpt-7.index").exists()  # steps 0..6 done
    rec = Steps()
    plugin_manager().register(rec)
    try:
        result = api.run(validate(spec))
    finally:
        plugin_manager().unregister(rec)
    assert [s.step for s in rec.steps] == [9, 11] and result.steps == 12
    # same seeds, same draws: an uninterrupted training ends at the same weights
    whole = api.run(validate({**spec, "solver": {**spec["solver"], "checkpoints": "ck2"}}))
    np.testing.assert_allclose(result.images, whole.images, atol=1e-5)
    other = {**spec["solver"], "generator": {"filters": 4, "depth": 2}}
    with pytest.raises(FaceReconError) as err:
        api.run(validate({**spec, "solver": other}))
    assert str(err.value) == (
        "ck: the checkpoint there is of the embedding generator (8 filters, depth 2) for tiny "
        "(32x32 in, 16-d); this spec trains the embedding generator (4 filters, depth 2) for "
        "tiny (32x32 in, 16-d) (use another checkpoints folder)"
    )


def test_a_learning_rate_drop_takes_effect_from_its_step_and_across_a_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver = {**SPEC["solver"], "report_every": 1}
    spec = {**SPEC, "tracking": {"enabled": False}}

    def images(**kw) -> np.ndarray:
        return api.run(validate({**spec, "solver": {**solver, **kw}})).images

    # Adam moves each weight by about the rate: from a rate of 1e-20 on, nothing moves
    frozen = images(steps=4, lr_drops={2: 1e-20})
    np.testing.assert_allclose(frozen, images(steps=2), atol=1e-6)
    assert np.abs(frozen - images(steps=4)).max() > 1e-3
    # a resume past a drop trains on at the dropped rate, as an uninterrupted run does
    images(steps=5, lr_drops={3: 3e-4}, checkpoints="ck")
    drops = {"steps": 8, "lr_drops": {3: 3e-4, 6: 1e-4}}
    np.testing.assert_allclose(
        images(**drops, checkpoints="ck"), images(**drops, checkpoints="ck2"), atol=1e-5
    )
    # a resume under a drop the checkpoint did not have, from a step it has passed, trains at it
    five = images(steps=5, checkpoints="ck3")
    np.testing.assert_allclose(
        images(steps=6, lr_drops={3: 1e-20}, checkpoints="ck3"), five, atol=1e-6
    )
    with pytest.raises(FaceReconError) as err:
        validate({**spec, "solver": {**solver, "steps": 8, "lr_drops": {8: 0.1}}})
    assert err.value.lines[0].startswith(
        "solver.lr_drops: 8: 0.1: drop to a rate > 0 at a step from 1 to 7"
    )


def test_spec_errors_for_the_solver():
    bad = {**SPEC, "solver": {**SPEC["solver"], "generator": {"kind": "guidd", "filtrs": 3}}}
    with pytest.raises(FaceReconError) as err:
        validate(bad)
    lines = err.value.lines
    assert any(
        line.startswith("solver.generator.kind: Input should be 'embedding', 'guided' or 'latent'")
        for line in lines
    )
    assert any("solver.generator.filtrs: unknown key 'filtrs'" in line for line in lines)
    guided = {
        **SPEC,
        "guides": [],
        "loss": {"metric": {"name": "l2"}},
        "solver": {**SPEC["solver"], "generator": {"kind": "guided"}},
    }
    with pytest.raises(FaceReconError, match="'guided' needs at least one entry under `guides`"):
        api.run(validate({**guided, "tracking": {"enabled": False}}))


# the nearest folder up that holds them: a copy of the tests may sit a level below the checkout
EXPERIMENTS = next(
    p / "experiments" for p in Path(__file__).resolve().parents if (p / "experiments").is_dir()
)
FF_SPECS = sorted((EXPERIMENTS / "feedforward").glob("*.yaml")) + sorted(
    p
    for pattern in ("fig9*.yaml", "fig10*.yaml", "fig11*.yaml", "table1*.yaml")
    for p in (EXPERIMENTS / "paper").glob(pattern)
)


def test_the_paper_figures_have_feedforward_specs():
    names = {p.name for p in FF_SPECS}
    for prefix in ("fig9", "fig10", "fig11", "table1"):
        assert any(n.startswith(prefix) for n in names), prefix


@pytest.mark.parametrize("path", FF_SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_feedforward_and_paper_specs_validate_with_every_sweep_variant(path, tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "EXPERIMENTS", EXPERIMENTS)  # the folder found above
    variants = validated(path, tmp_path)  # Fig. 11's frames are made by a command first
    for variant in variants:
        assert variant.model.name == "dlib-resnet"
    if path.name.startswith("table1"):  # Table 1 compares generator sizes
        filters = {v.solver.params["generator"]["filters"] for v in variants}
        assert len(filters) > 1


def _first_training_loss(transforms: dict | None) -> float:
    spec = {**SPEC, "solver": {**SPEC["solver"], "steps": 1}, "tracking": {"enabled": False}}
    if transforms is not None:
        spec["transforms"] = transforms
    rec = Steps()
    plugin_manager().register(rec)
    try:
        api.run(validate(spec))
    finally:
        plugin_manager().unregister(rec)
    return rec.steps[0].metrics["train/loss/embedding"]


def test_training_sees_the_spec_transforms():
    plain = _first_training_loss(None)
    # the same first step (same generator, embeddings and seed) through an identity draw
    assert _first_training_loss(
        {"samples": 2, "chain": [{"name": "scale", "min": 1.0, "max": 1.0}]}
    ) == pytest.approx(plain, rel=1e-4)
    # strong noise on every draw changes what the model sees, so the loss
    noisy = _first_training_loss({"samples": 2, "chain": [{"name": "noise", "std": 0.5}]})
    assert abs(noisy - plain) > 1e-3 * plain


def nearest_guides(model, templates, k, below):
    """Brute force: per template, the mean LFW chip of its k most similar strangers."""
    chips = np.stack([faces.resize(faces.as_rgb(p), 32) for p in faces.read_images("builtin:lfw")])
    rows = np.asarray(model.network()(chips), np.float64)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    out = []
    for template in np.asarray(templates, np.float64):
        cosines = rows @ (template / np.linalg.norm(template))
        order = [i for i in np.argsort(-cosines, kind="stable") if cosines[i] < below]
        out.append(chips[order[:k]].mean(axis=0))
    return np.stack(out).astype(np.float32)


def test_a_generator_with_nearest_guides_trains_and_generates_on_them(
    tmp_path, store, calibrated, monkeypatch
):
    from facerecon.faces.neighbours import Strangers

    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path / "cache"))
    seen = []
    means = Strangers.means
    monkeypatch.setattr(
        Strangers, "means", lambda self, t: seen.append(np.array(t)) or means(self, t)
    )
    spec = {
        **SPEC,
        "name": "ff-nearest",
        "model": {"name": "tiny-calibrated"},
        "guides": [],
        "loss": {"metric": {"name": "l2"}, "regularizers": [{"name": "tv", "weight": 0.001}]},
        "solver": {
            **SPEC["solver"],
            "generator": {
                "kind": "guided",
                "filters": 6,
                "depth": 2,
                "nearest": {"images": "builtin:lfw", "align": False, "k": 5},
            },
            "sampling": {"images": "builtin:lfw", "subset": [0, 50]},
            "steps": 3,
            "batch": 4,
            "report_every": 3,
            "guide_weight": 0.5,
        },
    }
    result = api.run(validate(spec))
    model, below = calibrated(), calibrated.thresholds["1e-2"]
    targets = np.asarray(
        model.network()(
            np.stack(
                [
                    faces.resize(faces.read_image(f"builtin:{n}"), 32)
                    for n in ("astronaut", "grace-hopper")
                ]
            )
        )
    )
    # every training step drew its batch's guides from the batch's own sampled embeddings
    chips = np.stack(
        [faces.resize(faces.as_rgb(p), 32) for p in faces.read_images("builtin:lfw")[:50]]
    )
    sampler = EmbeddingSampler("gaussian", np.asarray(model.network()(chips)), 0.1)
    drawn = [sampler.sample(np.random.default_rng([0, t]), 4) for t in range(3)]
    batches = [s for s in seen if len(s) == 4]
    assert len(batches) == 3
    for got, want in zip(batches, drawn, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # step 0's pixel anchor: the untrained generator's images against their own guides
    start = Generator.build(result.extras["generator"].config, sampler.mean, sampler.variance)
    own = nearest_guides(model, drawn[0], 5, below)
    first = np.asarray(start.network([drawn[0], own])) - own
    history = MlflowClient(store).get_metric_history(result.run_id, "train/loss/guide_pixels")
    (logged,) = [m for m in history if m.step == 0]  # the window of step 0 alone
    assert logged.value == pytest.approx(float(np.mean(first**2)), rel=1e-4)
    # the probes: the network on the targets with their brute-force guides
    guides = nearest_guides(model, targets, 5, below)
    network = result.extras["generator"].network
    expected = np.asarray(network([targets, guides], training=False))
    np.testing.assert_allclose(result.images, expected, atol=1e-5)
    # stored and loaded back, it makes the same guides for an embedding file
    np.save(tmp_path / "t.npy", targets)
    uri = f"runs:/{result.run_id}/generator"
    made = generate(uri, tmp_path / "t.npy")
    np.testing.assert_allclose(made.images, expected, atol=1e-5)
    with pytest.raises(FaceReconError, match="makes its own guides"):
        generate(uri, tmp_path / "t.npy", guide="builtin:average-face")


def test_a_generator_trained_on_photos_is_held_to_the_photo_of_each_template(
    tmp_path, store, monkeypatch
):
    from facerecon_plugins.solvers.feedforward.sampling import PhotoSampler

    drawn = []
    draw = PhotoSampler.draw
    monkeypatch.setattr(
        PhotoSampler, "draw", lambda self, rng, n: drawn.append(draw(self, rng, n)) or drawn[-1]
    )
    spec = {
        **SPEC,
        "name": "ff-photos",
        "guides": [],
        "loss": {"metric": {"name": "l2"}, "regularizers": [{"name": "tv", "weight": 0.001}]},
        "solver": {
            **SPEC["solver"],
            "sampling": {"kind": "photos", "images": "builtin:lfw", "subset": [0, 6]},
            "steps": 2,
            "batch": 4,
            "report_every": 2,
            "photo_weight": 0.5,
            "photo_layers": {"conv1": 2.0},
        },
    }
    result = api.run(validate(spec))
    model = tiny_model.TinyModel().network()
    chips = np.stack(
        [faces.resize(faces.as_rgb(p), 32) for p in faces.read_images("builtin:lfw")[:6]]
    )
    pool = np.concatenate([chips, chips[:, :, ::-1]])  # the photos and their mirror images
    assert len(drawn) == 2
    for embeddings, photos in drawn:
        # each photo is one of the pool's, and its embedding is the model's of that photo
        rows = [int(np.argmin(np.abs(pool - ph).reshape(12, -1).max(1))) for ph in photos]
        np.testing.assert_allclose(photos, pool[rows], atol=1e-6)
        np.testing.assert_allclose(embeddings, np.asarray(model(photos)), rtol=1e-4, atol=1e-5)
        assert len(set(rows)) == 4  # no photo twice in a batch
    # step 0's photo term: the untrained generator's mean absolute distance to the photos
    everything = np.asarray(model(pool), np.float64)
    start = Generator.build(
        result.extras["generator"].config, everything.mean(0), everything.var(0) + 1e-12
    )
    embeddings, photos = drawn[0]
    want = np.mean(np.abs(np.asarray(start.network([embeddings])) - photos))
    history = MlflowClient(store).get_metric_history(result.run_id, "train/loss/photo_pixels")
    (logged,) = [m for m in history if m.step == 0]
    assert logged.value == pytest.approx(float(want), rel=1e-4)
    # and the perceptual term: twice the mean absolute difference of conv1's activations
    conv1 = keras.Model(model.input, model.get_layer("conv1").output)
    made = np.asarray(conv1(np.asarray(start.network([embeddings]))))
    want = 2.0 * np.mean(np.abs(made - np.asarray(conv1(photos))))
    history = MlflowClient(store).get_metric_history(result.run_id, "train/loss/photo_features")
    (logged,) = [m for m in history if m.step == 0]
    assert logged.value == pytest.approx(float(want), rel=1e-4)
    spec["solver"] = {**spec["solver"], "photo_layers": {"conv3": 1.0}}
    wrong = r"solver.photo_layers: tiny has no layer 'conv3' to tap \(tappable: pixels, conv1"
    with pytest.raises(FaceReconError, match=wrong):
        api.run(validate(spec))


def test_keep_colour_gives_each_image_its_guides_channel_means(tmp_path):
    generator = Generator.build(config(32, 16, "guided", keep_colour=True), seed=3)
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((3, 16)).astype(np.float32)
    guides = (0.3 + 0.4 * rng.random((3, 32, 32, 3))).astype(np.float32)
    images = generator.generate(rows, guides)
    plain = Generator(generator.network, config(32, 16, "guided"))  # same weights, no shift
    assert np.abs(images.mean(axis=(1, 2)) - guides.mean(axis=(1, 2))).max() < 1e-5
    before = plain.network.get_layer("crop").output
    raw = np.asarray(keras.Model(plain.network.inputs, before)([rows, guides]))
    shifted = raw - raw.mean(axis=(1, 2), keepdims=True) + guides.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(images, np.clip(shifted, 0, 1), atol=1e-5)
    store.save(generator, tmp_path / "g")
    np.testing.assert_allclose(store.load(str(tmp_path / "g")).generate(rows, guides), images)


def test_a_residual_generator_adds_half_its_change_to_the_guide():
    generator = Generator.build(config(32, 16, "guided", residual=True), seed=2)
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((3, 16)).astype(np.float32)
    guides = rng.random((3, 32, 32, 3)).astype(np.float32)
    # a trained change: big enough to clip somewhere
    layer = generator.network.get_layer("to_image")
    layer.kernel.assign(rng.normal(0, 0.5, layer.kernel.shape).astype(np.float32))
    images = generator.generate(rows, guides)
    pre = np.asarray(keras.Model(generator.network.inputs, layer.output)([rows, guides]))
    low, high = (pre.shape[1] - 32) // 2, pre.shape[1] - 32 - (pre.shape[1] - 32) // 2
    change = np.tanh(pre[:, low : pre.shape[1] - high, low : pre.shape[2] - high])
    expected = np.clip(guides + 0.5 * change, 0, 1)
    np.testing.assert_allclose(images, expected, atol=1e-5)
    assert np.any(expected == 0) or np.any(expected == 1)
    untrained = Generator.build(config(32, 16, "guided", residual=True), seed=2)
    assert np.abs(untrained.generate(rows, guides) - guides).max() < 0.05  # starts at the guide
