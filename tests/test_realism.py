"""Skin tone (ITA of the cheeks) and texture (power-spectrum slope) against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from facerecon.evaluation import realism
from facerecon.evaluation.attack_report import realism_table


def _lab_by_hand(rgb: np.ndarray) -> np.ndarray:
    """sRGB (D65) -> CIELAB, written out from the standard's formulas."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
         [0.019334, 0.119193, 0.950227]]
    )  # fmt: skip
    xyz = m @ linear / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


@pytest.mark.parametrize("rgb", [(0.85, 0.66, 0.55), (0.45, 0.30, 0.22), (0.62, 0.45, 0.40)])
def test_ita_of_a_uniform_skin_colour_is_the_closed_form(rgb):
    chip = np.broadcast_to(np.array(rgb, np.float32), (150, 150, 3)).copy()
    lightness, _, b = _lab_by_hand(np.array(rgb))
    assert realism.ita(chip) == pytest.approx(np.degrees(np.arctan((lightness - 50) / b)), abs=0.05)


def test_only_the_cheeks_are_read():
    chip = np.zeros((150, 150, 3), np.float32)  # black outside the cheeks
    for top, bottom, left, right in realism.CHEEKS:
        chip[int(top * 150) : int(bottom * 150), int(left * 150) : int(right * 150)] = (
            0.8,
            0.6,
            0.5,
        )
    lightness, _, b = _lab_by_hand(np.array([0.8, 0.6, 0.5]))
    assert realism.ita(chip) == pytest.approx(np.degrees(np.arctan((lightness - 50) / b)), abs=0.05)


def test_a_gray_chip_has_no_skin_tone():
    assert realism.ita(np.full((150, 150, 3), 0.6, np.float32)) is None


@pytest.mark.parametrize("alpha", [1.0, 1.5])
def test_spectrum_slope_of_power_law_noise(alpha):
    # Amplitude 1/f^alpha with random phases: power falls as f^(-2 alpha).
    n = 160
    rng = np.random.default_rng(0)
    fy, fx = np.meshgrid(np.fft.fftfreq(n) * n, np.fft.fftfreq(n) * n, indexing="ij")
    f = np.maximum(np.hypot(fy, fx), 1)
    spectrum = f**-alpha * np.exp(2j * np.pi * rng.random((n, n)))
    image = np.real(np.fft.ifft2(spectrum))
    image = (image - image.min()) / (image.max() - image.min())
    slopes = realism.spectrum_slope(np.stack([image] * 3, -1))
    assert slopes == pytest.approx(-2 * alpha, abs=0.15)


def test_measures_compare_with_the_photos_in_colour_only():
    warm = np.broadcast_to(np.float32([0.85, 0.66, 0.55]), (150, 150, 3)).copy()
    dark = np.broadcast_to(np.float32([0.45, 0.30, 0.22]), (150, 150, 3)).copy()
    gray = np.full((150, 150, 3), 0.5, np.float32)
    found = realism.measures(warm, [dark, gray, dark])
    assert found["ita_photos"] == pytest.approx(realism.ita(dark))
    assert found["ita_difference"] == pytest.approx(abs(realism.ita(warm) - realism.ita(dark)))
    assert realism.measures(warm, [gray])["ita_difference"] is None


def test_the_realism_table_shows_each_method_and_the_photos():
    data = {
        "realism": {
            "photos": {"spectrum_slope": -2.312},
            "methods": {
                "iterative (adam)": {
                    "ita_difference": 12.345,
                    "people_in_colour": 3,
                    "spectrum_slope": -1.2,
                },
                "baseline": {"ita_difference": None, "people_in_colour": 0, "spectrum_slope": -2.9},
            },
        }
    }
    lines = realism_table(data)
    assert "| iterative (adam) | 12.3 | 3 | -1.20 |" in lines
    assert "| baseline | - | 0 | -2.90 |" in lines
    assert "| the people's photos | - | - | -2.31 |" in lines
    assert realism_table({}) == []
