"""Two measures of how photo-like a reconstruction is, beside the judges' identity scores.

- **Skin tone**: the individual typology angle (ITA, Chardon et al. 1991) of the cheeks,
  ``atan((L* - 50) / b*)`` in degrees from the CIELAB mean of two cheek patches of an
  aligned chip; a reconstruction is compared with the person's photos (absolute difference
  in degrees). Photos without colour (grayscale) have no ITA.
- **Texture**: the slope of the chip's radially averaged power spectrum on log-log axes
  (the paper's Appendix C: natural images fall off about as 1/f^2, a slope near -2).
"""

from __future__ import annotations

import numpy as np
import skimage.color

#: cheek patches of a dlib-aligned chip (padding 0.25), as (top, bottom, left, right)
#: fractions of its side: on the cheekbones, below the outer eye corners, above the smile
#: lines and any moustache (eyes at about 0.30 of the side, mouth at about 0.62)
CHEEKS = ((0.42, 0.52, 0.22, 0.33), (0.42, 0.52, 0.67, 0.78))
#: a patch whose mean chroma (|a*| + |b*|) is below this has no colour to measure
MIN_CHROMA = 2.0
#: the frequency band of the spectrum fit, in cycles per image side
BAND = (4.0, 0.25)  # from 4 cycles up to a quarter of the side in pixels


def cheek_lab(chip: np.ndarray) -> np.ndarray:
    """The CIELAB mean (L*, a*, b*) of both cheek patches of an RGB [0, 1] chip."""
    size = chip.shape[0]
    lab = skimage.color.rgb2lab(np.clip(chip, 0, 1))
    patches = [
        lab[int(t * size) : int(b * size), int(left * size) : int(r * size)].reshape(-1, 3)
        for t, b, left, r in CHEEKS
    ]
    return np.concatenate(patches).mean(axis=0)


def ita(chip: np.ndarray) -> float | None:
    """The cheeks' ITA in degrees, or None when the chip has no colour (grayscale)."""
    lightness, a, b = cheek_lab(chip)
    if abs(a) + abs(b) < MIN_CHROMA:
        return None
    return float(np.degrees(np.arctan2(lightness - 50.0, b)))


def spectrum_slope(chip: np.ndarray) -> float:
    """The slope of log power against log frequency of the gray chip (Hann-windowed)."""
    gray = skimage.color.rgb2gray(np.clip(chip, 0, 1)) if chip.ndim == 3 else chip
    size = min(gray.shape)
    gray = gray[:size, :size] - gray[:size, :size].mean()
    window = np.outer(np.hanning(size), np.hanning(size))
    power = np.abs(np.fft.fftshift(np.fft.fft2(gray * window))) ** 2
    y, x = np.indices(power.shape) - size // 2
    radius = np.hypot(y, x).round().astype(int)
    counts = np.bincount(radius.ravel())
    radial = np.bincount(radius.ravel(), power.ravel()) / np.maximum(counts, 1)
    freqs = np.arange(len(radial))
    band = (freqs >= BAND[0]) & (freqs <= BAND[1] * size)
    slope, _ = np.polyfit(np.log(freqs[band]), np.log(radial[band]), 1)
    return float(slope)


def measures(reconstruction: np.ndarray, photos: list[np.ndarray]) -> dict[str, float | None]:
    """A reconstruction's ITA, the mean ITA of the person's photos, their absolute
    difference (None without colour), and the reconstruction's spectrum slope."""
    own = ita(reconstruction)
    tones = [t for t in map(ita, photos) if t is not None]
    theirs = float(np.mean(tones)) if tones else None
    return {
        "ita": own,
        "ita_photos": theirs,
        "ita_difference": None if own is None or theirs is None else abs(own - theirs),
        "spectrum_slope": spectrum_slope(reconstruction),
    }
