"""Transforms, parameterizations and the transformed objective against independent numpy
computations."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import scipy.ndimage
import tensorflow as tf

from facerecon.core.registry import registry
from facerecon.core.schedules import Schedule
from facerecon.engine.objective import Objective, Term, Transforms
from facerecon.ops.warp import affine, uniform
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


def images(b=3, size=24, width=None):
    return rng.random((b, size, width or size, 3)).astype(np.float32)


def drawn(seed, n, low, high) -> np.ndarray:
    """TF's stateless uniform draw, called directly: the n values a seed stands for."""
    return tf.random.stateless_uniform([n], seed, minval=low, maxval=high).numpy()


def split(seed, k: int) -> list[tf.Tensor]:
    """The k child seeds TF's stateless split makes of a seed."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, k))


def per_channel(f, image: np.ndarray) -> np.ndarray:
    return np.stack([f(image[..., c]) for c in range(image.shape[-1])], axis=-1)


def scipy_rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    # scipy turns the picture counter-clockwise as displayed for a positive angle
    return scipy.ndimage.rotate(
        image, -degrees, axes=(0, 1), reshape=False, order=1, mode="reflect"
    )


def scipy_zoomed(image: np.ndarray, factor: float) -> np.ndarray:
    c = (np.array(image.shape[:2]) - 1) / 2.0
    # scipy maps output coordinates to input ones: input = c + (output - c) / factor
    return per_channel(
        lambda ch: scipy.ndimage.affine_transform(
            ch, np.eye(2) / factor, offset=c - c / factor, order=1, mode="reflect"
        ),
        image,
    )


def scipy_shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return scipy.ndimage.shift(image, (dy, dx, 0), order=1, mode="reflect")


# ---- the per-image draw --------------------------------------------------------------------


def test_uniform_draws_one_value_per_image_in_the_range():
    x = tf.zeros([64, 5, 7, 3])
    values = uniform(SEED, x, -2.0, 3.0).numpy()
    assert values.shape == (64,)
    assert values.min() >= -2.0 and values.max() < 3.0
    assert values.min() < -1.0 and values.max() > 2.0  # it spans the range
    seeded = tf.random.stateless_uniform([64], SEED)
    np.testing.assert_allclose(values, -2.0 + 5.0 * seeded.numpy(), atol=1e-5)


# ---- the affine warp -----------------------------------------------------------------------


def test_integer_shift_moves_the_content():
    x = images()
    out = affine(tf.constant(x), shift_x=3.0, shift_y=-2.0).numpy()
    # output(y, x) = input(y + 2, x - 3) wherever that input pixel exists
    np.testing.assert_allclose(out[:, :-2, 3:], x[:, 2:, :-3], atol=1e-6)


def test_borders_are_filled_by_reflection_about_the_edge():
    x = images(size=12, width=15)
    out = affine(tf.constant(x), shift_x=3.0, shift_y=-2.0).numpy()
    # the three columns shifted in on the left mirror the first three (d c b a | a b c d)
    np.testing.assert_allclose(out[:, :-2, :3], x[:, 2:, 2::-1], atol=1e-6)
    # the two rows shifted in at the bottom mirror the last two
    np.testing.assert_allclose(out[:, -2:, 3:], x[:, :-3:-1, :-3], atol=1e-6)


def test_quarter_turn_is_rot90():
    x = images(size=17)
    out = affine(tf.constant(x), degrees=90.0).numpy()
    turned = np.rot90(x, k=1, axes=(1, 2))
    turned_back = np.rot90(x, k=-1, axes=(1, 2))
    error = min(np.abs(out - turned).max(), np.abs(out - turned_back).max())
    assert error < 1e-4


def test_a_positive_angle_turns_the_picture_clockwise():
    x = np.zeros((1, 21, 21, 3), np.float32)
    x[0, 2, 10] = 1.0  # a dot above the centre
    out = affine(tf.constant(x), degrees=90.0).numpy()[0, ..., 0]
    assert np.unravel_index(out.argmax(), out.shape) == (10, 18)  # now right of it
    np.testing.assert_allclose(out, np.rot90(x[0, ..., 0], k=-1), atol=1e-5)


@pytest.mark.parametrize("degrees", [30.0, -50.0, 137.0])
def test_rotation_matches_scipy_on_a_wide_image(degrees):
    x = images(b=1, size=20, width=27)
    out = affine(tf.constant(x), degrees=degrees).numpy()[0]
    np.testing.assert_allclose(out, scipy_rotated(x[0], degrees), atol=1e-5)


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


@pytest.mark.parametrize("factor", [1.3, 0.7])
def test_zoom_in_and_out_match_scipy_on_a_tall_image(factor):
    x = images(b=1, size=27, width=20)
    out = affine(tf.constant(x), scale=factor).numpy()[0]
    np.testing.assert_allclose(out, scipy_zoomed(x[0], factor), atol=1e-5)


def test_fractional_shift_matches_scipy():
    x = images(b=1, size=20, width=27)
    out = affine(tf.constant(x), shift_x=2.5, shift_y=-1.25).numpy()[0]
    np.testing.assert_allclose(out, scipy_shifted(x[0], 2.5, -1.25), atol=1e-5)


def test_zoom_and_turn_are_about_the_centre_and_the_shift_comes_after():
    x = images(b=1, size=20, width=27)
    s, degrees, dx, dy = 1.2, -50.0, 1.5, 2.0
    out = affine(tf.constant(x), scale=s, degrees=degrees, shift_x=dx, shift_y=dy).numpy()[0]
    # (row, col) output -> input: c + R (output - c - shift) / s, R the inverse turn
    t = np.deg2rad(degrees)
    inverse = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) / s
    c = (np.array(x.shape[1:3]) - 1) / 2.0
    offset = c - inverse @ (c + np.array([dy, dx]))
    ref = per_channel(
        lambda ch: scipy.ndimage.affine_transform(
            ch, inverse, offset=offset, order=1, mode="reflect"
        ),
        x[0],
    )
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_each_image_gets_its_own_parameters():
    x = images(b=3, size=20, width=23)
    angles, factors = [10.0, -35.0, 80.0], [0.8, 1.0, 1.4]
    shifts_x, shifts_y = [0.5, -2.0, 3.25], [1.0, 0.0, -1.5]
    out = affine(
        tf.constant(x),
        scale=tf.constant(factors),
        degrees=tf.constant(angles),
        shift_x=tf.constant(shifts_x),
        shift_y=tf.constant(shifts_y),
    ).numpy()
    for i in range(3):
        single = affine(
            tf.constant(x[i : i + 1]), factors[i], angles[i], shifts_x[i], shifts_y[i]
        ).numpy()[0]
        np.testing.assert_allclose(out[i], single, atol=1e-6)
    only_turned = affine(tf.constant(x), degrees=tf.constant(angles)).numpy()
    for i in range(3):
        np.testing.assert_allclose(only_turned[i], scipy_rotated(x[i], angles[i]), atol=1e-5)


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


@pytest.mark.parametrize("transform", ALL, ids=lambda t: t.name)
def test_each_transform_is_registered_under_its_name(transform):
    assert registry().get("transform", transform.name) is type(transform)


def test_the_transform_names_are_the_documented_ones():
    names = [t.name for t in ALL]
    assert names == ["jitter", "scale", "rotate", "mirror", "colour", "blur", "noise"]


def test_rotate_turns_each_image_by_its_drawn_angle_in_degrees():
    x = images(b=5, size=20, width=27)
    out = Rotate(Rotate.Params(degrees=60))(tf.constant(x), SEED).numpy()
    angles = drawn(SEED, 5, -60.0, 60.0)
    assert angles.min() < -10 and angles.max() > 10  # turns both ways, and far
    for i in range(5):
        np.testing.assert_allclose(out[i], scipy_rotated(x[i], angles[i]), atol=1e-5)


def test_scale_zooms_each_image_by_its_drawn_factor():
    x = images(b=5, size=27, width=20)
    out = Scale(Scale.Params(min=0.6, max=1.5))(tf.constant(x), SEED).numpy()
    factors = drawn(SEED, 5, 0.6, 1.5)
    assert factors.min() < 0.9 and factors.max() > 1.1  # both in and out
    for i in range(5):
        np.testing.assert_allclose(out[i], scipy_zoomed(x[i], factors[i]), atol=1e-5)


def test_scale_with_one_factor_is_that_zoom():
    x = images(b=2, size=21)
    out = Scale(Scale.Params(min=1.25, max=1.25))(tf.constant(x), SEED).numpy()
    for i in range(2):
        np.testing.assert_allclose(out[i], scipy_zoomed(x[i], 1.25), atol=1e-5)


def test_scale_bounds_must_be_ordered():
    with pytest.raises(pydantic.ValidationError, match=r"min \(1.3\) must not exceed max \(1.2\)"):
        Scale.Params(min=1.3, max=1.2)


def test_jitter_shifts_each_image_by_its_two_drawn_offsets():
    x = images(b=5, size=20, width=27)
    out = Jitter(Jitter.Params(pixels=5))(tf.constant(x), SEED).numpy()
    seed_x, seed_y = split(SEED, 2)
    dx, dy = drawn(seed_x, 5, -5.0, 5.0), drawn(seed_y, 5, -5.0, 5.0)
    for i in range(5):
        np.testing.assert_allclose(out[i], scipy_shifted(x[i], dx[i], dy[i]), atol=1e-5)


def test_jitter_shifts_stay_within_bounds():
    # a one-pixel dot moves by at most `pixels` in each direction
    x = np.zeros((64, 33, 33, 3), np.float32)
    x[:, 16, 16] = 1.0
    out = Jitter(Jitter.Params(pixels=4))(tf.constant(x), SEED).numpy()
    ys, xs = np.unravel_index(out[..., 0].reshape(64, -1).argmax(1), (33, 33))
    assert np.all(np.abs(ys - 16) <= 4) and np.all(np.abs(xs - 16) <= 4)
    assert len(set(zip(ys, xs, strict=True))) > 5  # and they differ between images
    # in every direction: left and right, up and down, each reaching near the bound
    assert (xs - 16).min() <= -3 and (xs - 16).max() >= 3
    assert (ys - 16).min() <= -3 and (ys - 16).max() >= 3


def test_mirror_flips_with_probability_one_and_never_with_zero():
    x = images()
    np.testing.assert_array_equal(Mirror(Mirror.Params(p=1.0))(tf.constant(x), SEED), x[:, :, ::-1])
    np.testing.assert_array_equal(Mirror(Mirror.Params(p=0.0))(tf.constant(x), SEED), x)


def test_mirror_flips_the_images_whose_draw_falls_below_p():
    x = images(b=16, size=6, width=9)
    out = Mirror(Mirror.Params(p=0.3))(tf.constant(x), SEED).numpy()
    flipped = drawn(SEED, 16, 0.0, 1.0) < 0.3
    assert 0 < flipped.sum() < 16  # both kinds are in the batch
    np.testing.assert_array_equal(out[flipped], x[flipped][:, :, ::-1])
    np.testing.assert_array_equal(out[~flipped], x[~flipped])


def test_mirror_leaves_an_image_whose_draw_is_exactly_p():
    # draws are in [0, 1) and an image flips when its draw is below p, so that it flips
    # with probability p; with this seed image 9 of 256 draws exactly 0.5
    seed = tf.constant([6234, 0], tf.int32)
    x = images(b=256, size=1, width=2)
    draws = drawn(seed, 256, 0.0, 1.0)
    assert draws[9] == 0.5
    out = Mirror(Mirror.Params(p=0.5))(tf.constant(x), seed).numpy()
    flipped = draws < 0.5
    assert not flipped[9]
    np.testing.assert_array_equal(out[flipped], x[flipped][:, :, ::-1])
    np.testing.assert_array_equal(out[~flipped], x[~flipped])


def colour_reference(x, brightness, contrast, saturation):
    """The documented colour change in numpy, one factor per image."""
    b, c, s = (
        np.asarray(v, np.float64)[:, None, None, None] for v in (brightness, contrast, saturation)
    )
    out = x + b
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    out = mean + c * (out - mean)
    gray = out.mean(axis=3, keepdims=True)
    out = gray + s * (out - gray)
    return np.clip(out, 0.0, 1.0)


def test_colour_is_the_closed_form_for_its_drawn_factors():
    x = images(b=6, size=10, width=13)
    params = Colour.Params(brightness=0.3, contrast=0.5, saturation=0.7)
    out = Colour(params)(tf.constant(x), SEED).numpy()
    seed_b, seed_c, seed_s = split(SEED, 3)
    brightness = drawn(seed_b, 6, -0.3, 0.3)
    contrast = drawn(seed_c, 6, 0.5, 1.5)
    saturation = drawn(seed_s, 6, 0.3, 1.7)
    expected = colour_reference(x, brightness, contrast, saturation)
    assert 0.05 < np.mean((expected == 0) | (expected == 1)) < 0.5  # some values are clipped
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_contrast_alone_scales_about_each_images_mean():
    x = 0.3 + 0.4 * images(b=6, size=10)  # no value leaves [0, 1]
    out = Colour(Colour.Params(brightness=0, contrast=0.4, saturation=0))(tf.constant(x), SEED)
    out = out.numpy()
    factors = drawn(split(SEED, 3)[1], 6, 0.6, 1.4)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), mean.ravel(), atol=1e-5)
    np.testing.assert_allclose(out, mean + factors[:, None, None, None] * (x - mean), atol=1e-5)


def test_saturation_alone_keeps_each_pixels_gray():
    x = 0.3 + 0.4 * images(b=6, size=10)
    out = Colour(Colour.Params(brightness=0, contrast=0, saturation=0.5))(tf.constant(x), SEED)
    out = out.numpy()
    factors = drawn(split(SEED, 3)[2], 6, 0.5, 1.5)
    gray = x.mean(axis=3, keepdims=True)
    np.testing.assert_allclose(out.mean(axis=3, keepdims=True), gray, atol=1e-5)
    np.testing.assert_allclose(out, gray + factors[:, None, None, None] * (x - gray), atol=1e-5)


def test_brightness_alone_adds_one_offset_per_image():
    x = 0.25 + 0.5 * images()
    out = Colour(Colour.Params(brightness=0.2, contrast=0, saturation=0))(tf.constant(x), SEED)
    offsets = (out.numpy() - x).reshape(len(x), -1)
    np.testing.assert_allclose(offsets, offsets[:, :1].repeat(offsets.shape[1], 1), atol=1e-6)
    assert np.all(np.abs(offsets[:, 0]) <= 0.2)
    np.testing.assert_allclose(offsets[:, 0], drawn(split(SEED, 3)[0], 3, -0.2, 0.2), atol=1e-6)


def test_colour_clips_to_the_unit_range():
    x = np.stack([np.full((4, 4, 3), 0.95, np.float32), np.full((4, 4, 3), 0.05, np.float32)])
    # brightness 0.5 drawn from [0.5, 0.5]... the range is symmetric, so use a large one
    out = Colour(Colour.Params(brightness=1.0, contrast=0, saturation=0))(tf.constant(x), SEED)
    offsets = drawn(split(SEED, 3)[0], 2, -1.0, 1.0)
    np.testing.assert_allclose(
        out.numpy(), np.clip(x + offsets[:, None, None, None], 0, 1), atol=1e-6
    )


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


@pytest.mark.parametrize("sigma", [0.7, 1.1, 2.0])
def test_blur_is_the_drawn_blend_of_a_three_sigma_gaussian(sigma):
    x = images(b=4, size=17, width=22)
    out = Blur(Blur.Params(sigma=sigma))(tf.constant(x), SEED).numpy()
    amounts = drawn(SEED, 4, 0.0, 1.0)
    radius = int(np.ceil(3 * sigma))  # taps out to three std, rounded up
    for i in range(4):
        g = scipy.ndimage.gaussian_filter(
            x[i].astype(np.float64),
            sigma=(sigma, sigma, 0),
            mode="mirror",
            radius=(radius, radius, 0),
        )
        np.testing.assert_allclose(out[i], x[i] + amounts[i] * (g - x[i]), atol=2e-6)


def test_noise_has_the_asked_std():
    x = np.full((8, 64, 64, 3), 0.5, np.float32)
    out = Noise(Noise.Params(std=0.05))(tf.constant(x), SEED).numpy()
    assert abs(np.std(out - x) - 0.05) < 0.002


def test_noise_is_the_seeds_normal_draw_times_std():
    x = images(b=2, size=5, width=7)
    out = Noise(Noise.Params(std=0.3))(tf.constant(x), SEED).numpy()
    normal = tf.random.stateless_normal(x.shape, SEED).numpy()
    np.testing.assert_allclose(out, x + 0.3 * normal, atol=1e-6)


DEFAULTS = [
    (Jitter, {"pixels": 8.0}),
    (Scale, {"min": 0.9, "max": 1.1}),
    (Rotate, {"degrees": 5.0}),
    (Mirror, {"p": 0.5}),
    (Colour, {"brightness": 0.1, "contrast": 0.1, "saturation": 0.1}),
    (Blur, {"sigma": 1.0}),
    (Noise, {"std": 0.02}),
    (Fourier, {"decay": 1.0}),
]


@pytest.mark.parametrize("cls, defaults", DEFAULTS, ids=lambda v: getattr(v, "name", ""))
def test_parameters_default_to_the_documented_values(cls, defaults):
    assert cls().params.model_dump() == defaults


# (class, field, values accepted, values rejected): each bound, on both sides
BOUNDS = [
    (Jitter, "pixels", [0.0, 64.0], [-0.01, 64.01, float("nan")]),
    (Scale, "min", [0.2001, 5.0], [0.2, 5.01]),
    (Scale, "max", [0.2001, 5.0], [0.2, 5.01]),
    (Rotate, "degrees", [0.0, 180.0], [-0.01, 180.01]),
    (Mirror, "p", [0.0, 1.0], [-0.01, 1.01]),
    (Colour, "brightness", [0.0, 1.0], [-0.01, 1.01]),
    (Colour, "contrast", [0.0, 1.0], [-0.01, 1.01]),
    (Colour, "saturation", [0.0, 1.0], [-0.01, 1.01]),
    (Blur, "sigma", [0.001, 10.0], [0.0, 10.01]),
    (Noise, "std", [0.0, 1.0], [-0.01, 1.01]),
    (Fourier, "decay", [0.0, 3.0], [-0.01, 3.01]),
]


@pytest.mark.parametrize(
    "cls, key, good, bad", BOUNDS, ids=lambda v: v if isinstance(v, str) else ""
)
def test_parameters_are_checked_against_their_bounds(cls, key, good, bad):
    other = {"min": 0.2001, "max": 5.0}  # Scale's pair stays ordered
    for value in good:
        assert (
            getattr(cls.Params(**{**{k: other[k] for k in other if cls is Scale}, key: value}), key)
            == value
        )
    for value in bad:
        with pytest.raises(pydantic.ValidationError, match=key):
            kwargs = {k: other[k] for k in other if cls is Scale and k != key}
            cls.Params(**{**kwargs, key: value})


def test_parameters_are_described():
    for cls, _ in DEFAULTS:
        for key, field in cls.Params.model_fields.items():
            assert field.description, (cls.name, key)


# ---- parameterizations ---------------------------------------------------------------------

# the decorrelating colour matrix, columns scaled to a largest norm of 1
COLOUR = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOUR = COLOUR / np.linalg.norm(COLOUR, axis=0).max()


def spectrum_scale(height: int, width: int, decay: float) -> np.ndarray:
    """1 / f^decay over an rfft2 grid, f the cycles per pixel of each coefficient, with the
    constant term scaled as the lowest frequency the image holds."""
    rows = np.minimum(np.arange(height), height - np.arange(height)) / height
    cols = np.arange(width // 2 + 1) / width
    f = np.sqrt(rows[:, None] ** 2 + cols[None, :] ** 2)
    f[0, 0] = 1.0 / max(height, width)
    return f**-decay


def fft_images(params: np.ndarray, width: int, decay: float) -> np.ndarray:
    """numpy's inverse FFT of the scaled spectrum, in the image colours, through a sigmoid."""
    height = params.shape[1]
    scale = spectrum_scale(height, width, decay)[None, :, :, None]
    spectrum = (params[..., 0] + 1j * params[..., 1]) * scale
    spatial = np.fft.irfft2(spectrum, s=(height, width), axes=(1, 2))
    return 1 / (1 + np.exp(-4.0 * spatial @ COLOUR.T))


@pytest.mark.parametrize("size", [24, 25])
def test_fft_round_trips_an_image(size):
    x = np.clip(images(size=size), 0.01, 0.99)
    param = Fourier()
    back = param.to_images(tf.constant(param.from_images(x))).numpy()
    np.testing.assert_allclose(back, x, atol=1e-4)


@pytest.mark.parametrize("decay", [1.0, 2.0])
def test_fft_single_frequency_is_the_scaled_sinusoid(decay):
    # one Fourier coefficient in the decorrelated first colour channel: the image is the
    # sigmoid of gain * C[:, 0] * (the 1/f^decay-scaled cosine numpy's irfft2 makes)
    size, fy, fx = 16, 2, 3
    params = np.zeros((1, size, size // 2 + 1, 3, 2), np.float32)
    params[0, fy, fx, 0, 0] = 5.0 / 4**decay
    out = Fourier(Fourier.Params(decay=decay)).to_images(tf.constant(params)).numpy()[0]
    spectrum = np.zeros((size, size // 2 + 1), complex)
    freq = np.hypot(fy / size, fx / size)
    spectrum[fy, fx] = 5.0 / 4**decay / freq**decay
    wave = np.fft.irfft2(spectrum, s=(size, size))
    assert 0.01 < np.abs(wave).max() < 3  # a wave the sigmoid does not flatten
    expected = 1 / (1 + np.exp(-4.0 * wave[..., None] * COLOUR[:, 0]))
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("size", [16, 17])
@pytest.mark.parametrize("decay", [0.0, 1.7, 2.5])
def test_fft_images_are_numpys_inverse_fft_of_the_scaled_spectrum(size, decay):
    params = rng.normal(size=(2, size, size // 2 + 1, 3, 2)) * 0.5 / size ** (decay / 2)
    params = params.astype(np.float32)
    out = Fourier(Fourier.Params(decay=decay)).to_images(tf.constant(params)).numpy()
    expected = fft_images(params.astype(np.float64), size, decay)
    assert 0.02 < expected.std() < 0.3  # spread out, not flattened by the sigmoid
    np.testing.assert_allclose(out, expected, atol=2e-5)


@pytest.mark.parametrize("decay", [0.5, 1.0, 2.2])
def test_fft_parameters_of_an_image_are_the_spectrum_numpy_inverts(decay):
    # any shape: from_images does not assume a square
    x = images(b=2, size=12, width=17)
    x[0, 0, :4] = 0.0
    x[1, 5, 5:9] = 1.0
    params = Fourier(Fourier.Params(decay=decay)).from_images(x)
    assert params.dtype == np.float32 and params.shape == (2, 12, 9, 3, 2)
    back = fft_images(params.astype(np.float64), 17, decay)
    # values are clipped to [1e-3, 1 - 1e-3] first: the logit of 0 or 1 is infinite
    np.testing.assert_allclose(back, np.clip(x, 1e-3, 1 - 1e-3), atol=1e-5)


def test_fft_parameters_do_not_depend_on_the_images_float_type():
    # the logit of values near 0 or 1 loses digits in float32: it is taken in float64
    x = images(b=2, size=9)
    x[:, :2] = 1 - rng.random((2, 2, 9, 3)).astype(np.float32) * 2e-3
    param = Fourier()
    np.testing.assert_array_equal(param.from_images(x), param.from_images(x.astype(np.float64)))


@pytest.mark.parametrize("decay", [0.0, 1.3])
def test_fft_round_trips_an_image_with_black_and_white_pixels(decay):
    x = images(b=2, size=15)
    x[0, 3, :5] = 0.0
    x[1, 7:, 7] = 1.0
    param = Fourier(Fourier.Params(decay=decay))
    back = param.to_images(tf.constant(param.from_images(x))).numpy()
    np.testing.assert_allclose(back, np.clip(x, 1e-3, 1 - 1e-3), atol=1e-5)


def test_each_parameterization_is_registered_under_its_name():
    assert registry().get("parameterization", "pixels") is Pixels
    assert registry().get("parameterization", "fft") is Fourier


def test_only_pixels_parameters_are_pixels():
    assert Pixels.pixel_space is True and Fourier.pixel_space is False


def test_pixels_are_the_parameters():
    x = np.array([[[[0.0, 0.25, 1.0]]]])  # float64 in, float32 parameters out
    params = Pixels().from_images(x)
    assert params.dtype == np.float32
    np.testing.assert_array_equal(params, np.float32(x))
    out = Pixels().to_images(params)
    assert isinstance(out, tf.Tensor)
    np.testing.assert_array_equal(out.numpy(), np.float32(x))


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
