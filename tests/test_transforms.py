"""Transforms, parameterizations and the transformed objective against independent numpy
computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from facerecon.core.schedules import Schedule
from facerecon.engine.objective import Objective, Term, Transforms
from facerecon.ops.warp import affine
from facerecon_plugins.metrics.l2 import L2
from facerecon_plugins.parameterizations.fft import Fourier
from facerecon_plugins.parameterizations.pixels import Pixels
from facerecon_plugins.regularizers.tv import TotalVariation
from facerecon_plugins.transforms.blur import Blur
from facerecon_plugins.transforms.colour import Colour
from facerecon_plugins.transforms.jitter import Jitter
from facerecon_plugins.transforms.mirror import Mirror
from facerecon_plugins.transforms.noise import Noise
from facerecon_plugins.transforms.rotate import Rotate
from facerecon_plugins.transforms.scale import Scale

from .tiny_model import TinyModel

rng = np.random.default_rng(0)
SEED = tf.constant([3, 7], tf.int32)


def images(b=3, size=24):
    return rng.random((b, size, size, 3)).astype(np.float32)


# ---- the affine warp -----------------------------------------------------------------------


def test_integer_shift_moves_the_content():
    x = images()
    out = affine(tf.constant(x), shift_x=3.0, shift_y=-2.0).numpy()
    # output(y, x) = input(y + 2, x - 3) wherever that input pixel exists
    np.testing.assert_allclose(out[:, :-2, 3:], x[:, 2:, :-3], atol=1e-6)


def test_quarter_turn_is_rot90():
    x = images(size=17)
    out = affine(tf.constant(x), degrees=90.0).numpy()
    turned = np.rot90(x, k=1, axes=(1, 2))
    turned_back = np.rot90(x, k=-1, axes=(1, 2))
    error = min(np.abs(out - turned).max(), np.abs(out - turned_back).max())
    assert error < 1e-4


def test_zoom_matches_scipy_in_the_interior():
    x = images(b=1, size=32)
    out = affine(tf.constant(x), scale=1.25).numpy()[0]
    c = (32 - 1) / 2.0
    # scipy maps output coordinates to input ones: input = c + (output - c) / 1.25
    ref = np.stack(
        [
            scipy.ndimage.affine_transform(
                x[0, :, :, ch], np.eye(2) / 1.25, offset=c - c / 1.25, order=1
            )
            for ch in range(3)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(out[4:-4, 4:-4], ref[4:-4, 4:-4], atol=1e-5)


# ---- the transform plugins -----------------------------------------------------------------

ALL = [
    Jitter(),
    Scale(),
    Rotate(),
    Mirror(),
    Colour(),
    Blur(),
    Noise(),
]


@pytest.mark.parametrize("transform", ALL, ids=lambda t: t.name)
def test_same_seed_same_draw_new_seed_new_draw(transform):
    x = tf.constant(images())
    a, b = transform(x, SEED).numpy(), transform(x, SEED).numpy()
    c = transform(x, tf.constant([3, 8], tf.int32)).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape
    assert np.abs(a - c).max() > 1e-4


@pytest.mark.parametrize("transform", ALL, ids=lambda t: t.name)
def test_gradient_reaches_the_pixels(transform):
    x = tf.Variable(images())
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(transform(x, SEED)))
    grad = tape.gradient(loss, x)
    assert grad is not None and float(tf.reduce_sum(tf.abs(grad))) > 0


def test_mirror_flips_with_probability_one_and_never_with_zero():
    x = images()
    np.testing.assert_array_equal(Mirror(Mirror.Params(p=1.0))(tf.constant(x), SEED), x[:, :, ::-1])
    np.testing.assert_array_equal(Mirror(Mirror.Params(p=0.0))(tf.constant(x), SEED), x)


def test_jitter_shifts_stay_within_bounds():
    # a one-pixel dot moves by at most `pixels` in each direction
    x = np.zeros((64, 33, 33, 3), np.float32)
    x[:, 16, 16] = 1.0
    out = Jitter(Jitter.Params(pixels=4))(tf.constant(x), SEED).numpy()
    ys, xs = np.unravel_index(out[..., 0].reshape(64, -1).argmax(1), (33, 33))
    assert np.all(np.abs(ys - 16) <= 4) and np.all(np.abs(xs - 16) <= 4)
    assert len(set(zip(ys, xs, strict=True))) > 5  # and they differ between images


def test_brightness_alone_adds_one_offset_per_image():
    x = 0.25 + 0.5 * images()
    out = Colour(Colour.Params(brightness=0.2, contrast=0, saturation=0))(tf.constant(x), SEED)
    offsets = (out.numpy() - x).reshape(len(x), -1)
    np.testing.assert_allclose(offsets, offsets[:, :1].repeat(offsets.shape[1], 1), atol=1e-6)
    assert np.all(np.abs(offsets[:, 0]) <= 0.2)


def test_blur_blends_towards_scipys_gaussian():
    x = images(b=4, size=32)
    out = Blur(Blur.Params(sigma=1.5))(tf.constant(x), SEED).numpy()
    for i in range(len(x)):
        g = scipy.ndimage.gaussian_filter(x[i], sigma=(1.5, 1.5, 0), mode="mirror", truncate=3)
        # out = x + a (g - x) for one a in [0, 1]: recover a by least squares
        d = (g - x[i]).ravel()
        a = float(d @ (out[i] - x[i]).ravel() / (d @ d))
        assert 0 <= a <= 1
        np.testing.assert_allclose(out[i], x[i] + a * (g - x[i]), atol=2e-3)


def test_noise_has_the_asked_std():
    x = np.full((8, 64, 64, 3), 0.5, np.float32)
    out = Noise(Noise.Params(std=0.05))(tf.constant(x), SEED).numpy()
    assert abs(np.std(out - x) - 0.05) < 0.002


# ---- parameterizations ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [24, 25])
def test_fft_round_trips_an_image(size):
    x = np.clip(images(size=size), 0.01, 0.99)
    param = Fourier()
    back = param.to_images(tf.constant(param.from_images(x))).numpy()
    np.testing.assert_allclose(back, x, atol=1e-4)


def test_fft_single_frequency_is_the_scaled_sinusoid():
    # one Fourier coefficient in the decorrelated first colour channel: the image is the
    # sigmoid of gain * C[:, 0] * (the 1/f-scaled cosine numpy's irfft2 makes)
    size, fy, fx = 16, 2, 3
    params = np.zeros((1, size, size // 2 + 1, 3, 2), np.float32)
    params[0, fy, fx, 0, 0] = 5.0
    out = Fourier().to_images(tf.constant(params)).numpy()[0]
    spectrum = np.zeros((size, size // 2 + 1), complex)
    freq = np.hypot(fy / size, fx / size)
    spectrum[fy, fx] = 5.0 / freq
    wave = np.fft.irfft2(spectrum, s=(size, size))
    colour = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    colour = colour / np.linalg.norm(colour, axis=0).max()
    expected = 1 / (1 + np.exp(-4.0 * wave[..., None] * colour[:, 0]))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_pixels_clip_after_an_update():
    v = tf.Variable(np.array([[-0.5, 0.3, 1.7]], np.float32))
    Pixels().constrain(v)
    np.testing.assert_array_equal(v.numpy(), np.float32([[0.0, 0.3, 1.0]]))


# ---- the transformed objective -------------------------------------------------------------


def objective(transforms: Transforms) -> tuple[Objective, np.ndarray]:
    model = TinyModel()
    targets = rng.normal(size=(2, 16)).astype(np.float32)
    terms = [Term("tv", TotalVariation(), 0.5, Schedule())]
    return Objective(model, L2(), terms, targets, np.zeros(2, bool), Pixels(), transforms), targets


def test_embedding_term_is_the_mean_over_draws():
    obj, targets = objective(Transforms([Mirror(Mirror.Params(p=0.5))], samples=6, seed=1))
    x = images(b=2, size=32)
    terms = obj(tf.constant(x), tf.constant([0.5]), seed=SEED)
    # independently: the same six draws, embedded one by one
    drawn = Mirror(Mirror.Params(p=0.5))(
        tf.tile(tf.constant(x), [6, 1, 1, 1]), tf.random.experimental.stateless_fold_in(SEED, 0)
    ).numpy()
    emb = TinyModel().network()(drawn).numpy().reshape(6, 2, 16)
    expected = ((emb - targets[None]) ** 2).sum(-1).mean(0)
    np.testing.assert_allclose(terms["embedding"], expected, rtol=1e-4)
    # the pixel prior sees the images themselves, not the draws
    dx, dy = np.diff(x, axis=2), np.diff(x, axis=1)
    tv = (dx**2).sum((1, 2, 3)) + (dy**2).sum((1, 2, 3))
    np.testing.assert_allclose(terms["tv"], tv, rtol=1e-4)
    np.testing.assert_allclose(terms["total"], expected + 0.5 * tv, rtol=1e-4)


def test_without_a_seed_the_model_sees_the_images_as_they_are():
    obj, targets = objective(Transforms([Mirror(Mirror.Params(p=1.0))], samples=3))
    x = images(b=2, size=32)
    emb = TinyModel().network()(x).numpy()
    terms = obj(tf.constant(x), tf.constant([0.5]))
    np.testing.assert_allclose(terms["embedding"], ((emb - targets) ** 2).sum(-1), rtol=1e-4)
