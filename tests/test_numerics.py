"""Metrics, regularizers, schedules and pyramids against independent numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import skimage.io
import tensorflow as tf

from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import PrepareContext
from facerecon.core.schedules import Schedule
from facerecon.faces.photos import as_rgb, read_photo
from facerecon.ops import pyramid
from facerecon_plugins.metrics.dot import Dot
from facerecon_plugins.metrics.l2 import L2
from facerecon_plugins.regularizers.gaussian import GaussianPrior
from facerecon_plugins.regularizers.guide import Guide
from facerecon_plugins.regularizers.laplacian import LaplacianPyramid
from facerecon_plugins.regularizers.mirror import Mirror
from facerecon_plugins.regularizers.tv import TotalVariation

rng = np.random.default_rng(0)


def images(b=3, h=16, w=20):
    return rng.random((b, h, w, 3)).astype(np.float32)


# ---- metrics -------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [False, True])
def test_l2_and_dot_match_numpy(normalize):
    e, t = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))
    if normalize:
        en, tn = (
            e / np.linalg.norm(e, axis=1, keepdims=True),
            t / np.linalg.norm(t, axis=1)[:, None],
        )
    else:
        en, tn = e, t
    l2 = L2(L2.Params(normalize=normalize))(tf.constant(e, tf.float32), tf.constant(t, tf.float32))
    dot = Dot(Dot.Params(normalize=normalize))(
        tf.constant(e, tf.float32), tf.constant(t, tf.float32)
    )
    np.testing.assert_allclose(l2, ((en - tn) ** 2).sum(1), rtol=1e-5)
    np.testing.assert_allclose(dot, -(en * tn).sum(1), rtol=1e-5)


def test_normalized_l2_is_two_minus_twice_cosine():
    e, t = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    cos = (e * t).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(t, axis=1)
    l2 = L2(L2.Params(normalize=True))(tf.constant(e, tf.float32), tf.constant(t, tf.float32))
    np.testing.assert_allclose(l2, 2 - 2 * cos, rtol=1e-5, atol=1e-6)


# ---- total variation -----------------------------------------------------------------------


def tv_numpy(p, alpha):
    dx = np.diff(p, axis=2)
    dy = np.diff(p, axis=1)
    return ((dx**2).sum((1, 2, 3)) + (dy**2).sum((1, 2, 3))) ** (alpha / 2)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_tv_matches_numpy(alpha):
    p = images()
    got = TotalVariation(TotalVariation.Params(alpha=alpha))(tf.constant(p), {})
    np.testing.assert_allclose(got, tv_numpy(p.astype(np.float64), alpha), rtol=1e-4)


def test_tv_of_known_images():
    tv = TotalVariation()
    flat = np.full((1, 8, 8, 3), 0.3, np.float32)
    assert float(tv(tf.constant(flat), {})[0]) == 0.0
    # a vertical step edge of height 1 in one channel: 8 rows x one unit jump
    edge = np.zeros((1, 8, 8, 3), np.float32)
    edge[:, :, 4:, 0] = 1.0
    assert float(tv(tf.constant(edge), {})[0]) == pytest.approx(8.0)


def test_tv_gradient_is_minus_twice_the_laplacian():
    # Eq. 3 of the paper: dR/dp = -alpha R^(1-2/alpha) * Laplacian(p); alpha=2 -> -2 Lap(p).
    p = tf.constant(images(1, 12, 12))
    with tf.GradientTape() as tape:
        tape.watch(p)
        value = TotalVariation()(p, {})
    grad = tape.gradient(value, p).numpy()[0]
    x = p.numpy()[0]
    lap = x[2:, 1:-1] + x[:-2, 1:-1] + x[1:-1, 2:] + x[1:-1, :-2] - 4 * x[1:-1, 1:-1]
    np.testing.assert_allclose(grad[1:-1, 1:-1], -2 * lap, rtol=1e-4, atol=1e-5)


def test_tv_gradient_with_alpha_follows_eq3():
    alpha = 3.0
    p = tf.constant(images(1, 10, 10))
    with tf.GradientTape() as tape:
        tape.watch(p)
        value = TotalVariation(TotalVariation.Params(alpha=alpha))(p, {})
    grad = tape.gradient(value, p).numpy()[0]
    x = p.numpy()[0].astype(np.float64)
    r = tv_numpy(x[None], alpha)[0]
    lap = x[2:, 1:-1] + x[:-2, 1:-1] + x[1:-1, 2:] + x[1:-1, :-2] - 4 * x[1:-1, 1:-1]
    np.testing.assert_allclose(grad[1:-1, 1:-1], -alpha * r ** (1 - 2 / alpha) * lap, rtol=1e-3)


# ---- mirror ----------------------------------------------------------------------------------


def test_mirror_of_symmetric_image_is_zero_and_matches_numpy():
    half = images(2, 8, 5)
    sym = np.concatenate([half, half[:, :, ::-1]], axis=2)
    assert np.all(Mirror()(tf.constant(sym), {}).numpy() == 0)
    p = images()
    expected = ((p - p[:, :, ::-1]) ** 2).sum((1, 2, 3))
    np.testing.assert_allclose(Mirror()(tf.constant(p), {}), expected, rtol=1e-5)


# ---- guide -----------------------------------------------------------------------------------


def _prepared(reg, guides, acts=None):
    def forward(imgs, taps):
        return None, {t: (acts if acts is not None else imgs) for t in taps}

    reg.prepare(
        PrepareContext(model=None, forward=forward, guides=guides, load_images=lambda s, a: guides)
    )
    return reg


@pytest.mark.parametrize("r", [1.0, 2.0])
def test_guide_matches_numpy_and_vanishes_at_the_guide(r):
    g, p = images(), images()
    guide = _prepared(Guide(Guide.Params(layers={"pixels": 0.5}, r=r)), g)
    got = guide(tf.constant(p), {"pixels": tf.constant(p)})
    np.testing.assert_allclose(got, 0.5 * (np.abs(p - g) ** r).mean((1, 2, 3)), rtol=1e-4)
    at_guide = guide(tf.constant(g), {"pixels": tf.constant(g)}).numpy()
    np.testing.assert_allclose(at_guide, 0, atol=1e-6)


def test_guide_gradient_r2_is_closed_form():
    g, p = images(1), tf.constant(images(1))
    guide = _prepared(Guide(), g)
    with tf.GradientTape() as tape:
        tape.watch(p)
        value = guide(p, {"pixels": p})
    np.testing.assert_allclose(
        tape.gradient(value, p), 2 * (p.numpy() - g) / g[0].size, rtol=1e-4, atol=1e-8
    )


# ---- gaussian --------------------------------------------------------------------------------


def test_gaussian_eq5_matches_numpy_and_is_zero_at_the_mean():
    collection = (rng.normal(size=(50, 4, 4, 2)) * rng.random((4, 4, 2))).astype(np.float32)
    nu = 0.3
    prior = GaussianPrior(GaussianPrior.Params(layers={"conv": 2.0}, nu=nu))
    prior.prepare(
        PrepareContext(
            model=None,
            forward=lambda imgs, taps: (None, {"conv": imgs}),
            guides=None,
            load_images=lambda s, a: collection,
        )
    )
    v, s = collection.mean(0), collection.std(0)
    a = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    smax2 = s.max() ** 2
    expected = 2.0 * (nu * (a - v) ** 2 * smax2 / (s**2 + nu * smax2)).sum((1, 2, 3))
    got = prior(tf.constant(a), {"conv": tf.constant(a)})
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    at_mean = prior(tf.constant(v[None]), {"conv": tf.constant(v[None])})
    np.testing.assert_allclose(at_mean, 0, atol=1e-6)


@pytest.mark.parametrize("count", [1, 5])
def test_gaussian_needs_a_collection_with_spread(count):
    # one image, or five equal ones: Eq. 5's s_n are all 0 and the prior would be 0/0 = NaN
    collection = np.full((count, 4, 4, 2), 0.5, np.float32)
    prior = GaussianPrior(GaussianPrior.Params(layers={"conv": 1.0}, images="builtin:x"))
    context = PrepareContext(
        model=None,
        forward=lambda imgs, taps: (None, {"conv": imgs}),
        guides=None,
        load_images=lambda s, a: collection,
    )
    with pytest.raises(FaceReconError) as info:
        prior.prepare(context)
    assert info.value.lines == [
        "gaussian.images: 'builtin:x' names 1 image(s); the prior needs two or more "
        "different faces (e.g. builtin:lfw or a folder)"
        if count == 1
        else "gaussian.images: every image of 'builtin:x' is the same at layer 'conv' "
        "(spread 0); give a collection of different faces"
    ]


# ---- images ------------------------------------------------------------------------------------


def test_16_bit_photos_are_scaled_by_their_range(tmp_path):
    gray = np.full((8, 8), 30000, np.uint16)
    gray[0, 0] = 65535
    skimage.io.imsave(tmp_path / "gray16.png", gray, check_contrast=False)
    assert skimage.io.imread(tmp_path / "gray16.png").dtype == np.uint16  # a real 16-bit PNG
    photo = read_photo(tmp_path / "gray16.png")
    assert photo[1, 1] == pytest.approx([30000 / 65535] * 3) and photo[0, 0, 0] == 1.0
    rgb = np.zeros((8, 8, 3), np.uint16)
    rgb[..., 0], rgb[..., 2] = 1000, 50000
    skimage.io.imsave(tmp_path / "rgb16.tif", rgb, check_contrast=False)
    assert read_photo(tmp_path / "rgb16.tif")[3, 3] == pytest.approx(
        [1000 / 65535, 0, 50000 / 65535]
    )
    assert as_rgb(np.array([[0, 51, 255]], np.uint8))[0, :, 0] == pytest.approx([0, 0.2, 1])


# ---- Laplacian pyramid -----------------------------------------------------------------------

K = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


def _reduce_np(x):  # Burt & Adelson: output i centred on input 2i, borders mirrored
    f = scipy.ndimage.convolve(x, K, mode="mirror")
    return f[::2, ::2]


def _expand_np(lo, shape):
    z = np.zeros(shape)
    z[::2, ::2] = lo
    return scipy.ndimage.convolve(z, 4 * K, mode="mirror")


def bands_np(x, levels):
    out, g = [], x
    for _ in range(levels):
        lo = _reduce_np(g)
        out.append(g - _expand_np(lo, g.shape))
        g = lo
    return out + [g]


def test_pyramid_matches_numpy_and_reconstructs():
    p = images(2, 32, 32)
    bands = pyramid.split(tf.constant(p), 3)
    for b in range(2):
        for c in range(3):
            for got, want in zip(bands, bands_np(p[b, :, :, c].astype(np.float64), 3), strict=True):
                np.testing.assert_allclose(got.numpy()[b, :, :, c], want, atol=1e-5)
    np.testing.assert_allclose(pyramid.merge(bands), p, atol=1e-5)


@pytest.mark.parametrize("size", [(32, 32), (31, 17), (150, 150)])
def test_a_flat_image_has_no_band_energy(size):
    # Zero padding made the border of a flat image a band edge (RMS 0.04 to 0.07).
    flat = np.full((1, *size, 3), 0.6, np.float32)
    bands = pyramid.split(tf.constant(flat), 6)
    for band in bands[:-1]:
        np.testing.assert_allclose(band, 0, atol=1e-6)
    np.testing.assert_allclose(bands[-1], 0.6, atol=1e-6)
    assert float(LaplacianPyramid()(tf.constant(flat), {})[0]) == pytest.approx(
        sum((0.01 * 2.0**n) ** 2 for n in range(1, 5)), rel=1e-4
    )


def test_laplacian_regularizer_eq12_matches_numpy():
    # Eq. 12 sums n = 1..N; L_0 = g_0 - expand(g_1), the finest band, is left out.
    p = images(2, 32, 32)
    params = LaplacianPyramid.Params(levels=3, beta=0.5, norm=0.02)
    got = LaplacianPyramid(params)(tf.constant(p), {})
    for b in range(2):
        per_channel = [bands_np(p[b, :, :, c].astype(np.float64), 4) for c in range(3)]
        expected = 0.0
        for n in range(1, 4):
            band = np.stack([pc[n] for pc in per_channel], -1)
            expected += (np.sqrt((band**2).mean()) - 0.02 * 2 ** (0.5 * n)) ** 2
        assert float(got[b]) == pytest.approx(expected, rel=1e-4)


def test_lap_normalize_gives_unit_rms_bands():
    g = images(2, 32, 32).astype(np.float64) * 1e-3
    out = pyramid.normalize(tf.constant(g, tf.float32), 3).numpy()
    for b in range(2):
        # numpy bands of each channel, each band scaled to unit RMS over the image, merged
        per_channel = [bands_np(g[b, :, :, c], 3) for c in range(3)]
        bands = [np.stack([pc[k] for pc in per_channel], -1) for k in range(4)]
        scaled = [band / np.sqrt(np.mean(band**2)) for band in bands]
        assert [np.sqrt(np.mean(s**2)) for s in scaled] == pytest.approx([1.0] * 4)
        merged = scaled[-1]
        for band in reversed(scaled[:-1]):
            merged = band + np.stack(
                [_expand_np(merged[:, :, c], band.shape[:2]) for c in range(3)], -1
            )
        np.testing.assert_allclose(out[b], merged, rtol=1e-3, atol=1e-3)


# ---- schedules -------------------------------------------------------------------------------


def test_schedules():
    assert Schedule().at(0.5, 100) == 0.5
    assert Schedule(kind="exponential", rate=0.9).at(2.0, 3) == pytest.approx(2.0 * 0.9**3)
    lin = Schedule(kind="linear", end=1.0, steps=10)
    assert [lin.at(0.0, s) for s in (0, 5, 10, 20)] == pytest.approx([0, 0.5, 1, 1])
    with pytest.raises(ValueError, match="needs rate"):
        Schedule(kind="exponential")
