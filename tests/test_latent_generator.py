"""The ``latent`` generator kind: template -> a parameterization's latent, trained on the
parameterization's own cached samples, saved and loaded, rendered. A toy linear "face
generator" stands in for stylegan (whose 1024-pixel frames cost seconds each)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from pydantic import Field

from facerecon import Parameterization, Params, api, hookimpl
from facerecon.core.errors import FaceReconError
from facerecon.core.registry import plugin_manager
from facerecon.engine.validation import validate
from facerecon.ops.forward import forward_for
from facerecon_plugins.solvers.feedforward import latent, sampling, store

from . import tiny_model

SIZE, CODE = tiny_model.TinyModel.input_size, 6
MIXING = np.random.default_rng(7).standard_normal((CODE, SIZE * SIZE * 3)).astype(np.float32)


class ToyParams(Params):
    spread: float = Field(1.0, gt=0, description="standard deviation of the samples")


class Toy(Parameterization):
    """Images sigmoid(u @ MIXING): a smooth map from a 6-d latent, with seeded samples."""

    name = "toy-latent"
    Params = ToyParams
    renders = 0

    def from_images(self, images):
        return np.zeros((len(images), 1, CODE), np.float32)

    def to_images(self, params):
        Toy.renders += 1
        flat = tf.reshape(params, [-1, CODE]) @ tf.constant(MIXING)
        return tf.reshape(tf.sigmoid(flat), [-1, SIZE, SIZE, 3])

    def sample(self, count, seed):
        rng = np.random.default_rng(seed)
        return (self.params.spread * rng.standard_normal((count, 1, CODE))).astype(np.float32)


class _Plugin:
    @hookimpl
    def register_parameterizations(self, register):
        register(Toy)


@pytest.fixture(autouse=True)
def toy(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path / "cache"))
    plugin = _Plugin()
    plugin_manager().register(plugin, name="tests.toy-latent")
    yield
    plugin_manager().unregister(name="tests.toy-latent")


def numpy_images(u: np.ndarray) -> np.ndarray:
    return (1 / (1 + np.exp(-(u.reshape(-1, CODE) @ MIXING)))).reshape(-1, SIZE, SIZE, 3)


SPEC = {
    "name": "latent",
    "model": {"name": "tiny"},
    "targets": [{"image": "builtin:astronaut"}, {"image": "builtin:grace-hopper"}],
    "loss": {"metric": {"name": "l2", "normalize": False}, "regularizers": []},
    "parameterization": {"name": "toy-latent"},
    "solver": {
        "name": "feedforward",
        "generator": {"kind": "latent", "hidden_layers": 0},
        "sampling": {"kind": "generated", "samples": 80},
        "latent_weight": 1.0,
        "train_objective": False,
        "steps": 600,
        "batch": 40,
        "lr": 0.03,
        "lr_drops": {400: 0.005},
        "report_every": 200,
    },
    "tracking": {"enabled": False},
}


SHORT = {**SPEC["solver"], "steps": 2, "lr_drops": {}}


def test_samples_are_the_models_templates_of_the_rendered_latents_and_come_back_from_the_cache():
    model = api.model("tiny")
    param = Toy()
    forward = forward_for(model, [])
    made = sampling.generated(param, lambda x, taps: forward.numpy(x), "tiny", 40, seed=3)
    assert made.latents.shape == (40, 1, CODE) and made.embeddings.shape == (40, 16)
    assert len(np.unique(made.latents.round(5), axis=0)) == 40  # every sample its own
    expected = model.network()(numpy_images(made.latents)).numpy()  # keras, not the sampler
    np.testing.assert_allclose(made.embeddings, expected, atol=1e-4)
    Toy.renders = 0
    again = sampling.generated(param, lambda x, taps: forward.numpy(x), "tiny", 40, seed=3)
    assert Toy.renders == 0  # read back, not made again
    np.testing.assert_array_equal(again.embeddings, made.embeddings)
    other = sampling.generated(param, lambda x, taps: forward.numpy(x), "tiny", 8, seed=4)
    assert not np.allclose(other.latents, made.latents[:8])


def test_a_linear_latent_generator_learns_the_least_squares_map_and_round_trips(tmp_path):
    result = api.run(validate(SPEC))
    generator = result.extras["generator"]
    samples = sampling.generated(
        Toy(), lambda x, taps: forward_for(api.model("tiny"), taps).numpy(x), "tiny", 80, 0
    )
    # Least squares by numpy on the same samples: latent ~ [embedding, 1] @ M
    rows = np.c_[samples.embeddings, np.ones(len(samples.embeddings))]
    solution, *_ = np.linalg.lstsq(rows, samples.latents.reshape(80, CODE), rcond=None)
    best = rows @ solution
    predicted = generator.network([samples.embeddings]).numpy().reshape(80, CODE)
    zero = np.mean(samples.latents.reshape(80, CODE) ** 2)
    optimum = np.mean((best - samples.latents.reshape(80, CODE)) ** 2)
    reached = np.mean((predicted - samples.latents.reshape(80, CODE)) ** 2)
    assert optimum < 0.8 * zero  # there is something to learn
    assert reached < optimum + 0.05 * (zero - optimum), (zero, optimum, reached)
    # saved and loaded, it renders through the parameterization named in its config
    folder = store.save(generator, tmp_path / "generator")
    loaded = store.load(str(folder))
    loaded.check_model(api.model("tiny"), "loaded")
    embeddings = samples.embeddings[:5]
    expected = numpy_images(generator.network([embeddings]).numpy())
    np.testing.assert_allclose(loaded.generate(embeddings), expected, atol=1e-5)
    assert "latent generator (0 x 1024 hidden, to toy-latent's 1x6 latent)" in (
        loaded.config.describe()
    )


@pytest.mark.parametrize(
    ("solver", "message"),
    [
        ({"sampling": {"kind": "gaussian"}}, "go together"),
        ({"generator": {"kind": "embedding"}}, "go together"),
        ({"latent_weight": 0.0}, "nothing to train on"),
    ],
)
def test_spec_errors_name_what_goes_with_what(solver, message):
    spec = {**SPEC, "solver": {**SPEC["solver"], **solver}}
    with pytest.raises(FaceReconError, match=message):
        validate(spec)


def test_a_parameterization_without_samples_is_refused_in_one_line():
    spec = {**SPEC, "parameterization": {"name": "pixels"}}
    with pytest.raises(FaceReconError, match="'pixels' has none"):
        api.run(validate(spec))


def test_a_latent_generator_whose_parameterization_is_gone_says_so(tmp_path):
    generator = api.run(validate({**SPEC, "solver": SHORT})).extras["generator"]
    folder = store.save(generator, tmp_path / "generator")
    loaded = store.load(str(folder))
    plugin_manager().unregister(name="tests.toy-latent")
    try:
        with pytest.raises(FaceReconError, match="'toy-latent', which is not installed"):
            loaded.check_model(api.model("tiny"), "loaded")
    finally:
        plugin_manager().register(_Plugin(), name="tests.toy-latent")


def test_an_unbound_latent_generator_does_not_hand_out_latents_as_images():
    generator = api.run(validate({**SPEC, "solver": SHORT})).extras["generator"]
    generator.renderer = None
    with pytest.raises(FaceReconError, match="after check_model"):
        generator.generate(np.ones((1, 16), np.float32))


def test_the_latent_kind_keeps_its_parameters_to_itself():
    assert latent.build_network(16, (1, CODE), 32, 1, np.zeros(16), np.ones(16)).output_shape == (
        None,
        1,
        CODE,
    )
