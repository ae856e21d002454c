"""``fft``: a decorrelated colour basis and a 1/frequency-scaled Fourier spectrum.

The parameterization of the feature-visualization literature (Olah et al., Distill 2017;
Mordvintsev et al., "Differentiable image parameterizations", 2018): equal steps in the
parameters change every spatial frequency about equally in the image, so plain gradient
descent is not dominated by the highest frequencies. Images are
``sigmoid(C @ irfft2(spectrum * scale) * gain)`` per pixel, with ``C`` the square root of
natural images' colour covariance, which keeps them in (0, 1).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from pydantic import Field

from facerecon import Parameterization, Params, hookimpl

# Square root of the colour covariance of natural images (ImageNet), columns scaled to a
# largest norm of 1: correlated colours become independent parameters.
_COLOUR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
_COLOUR = _COLOUR_SQRT / np.max(np.linalg.norm(_COLOUR_SQRT, axis=0))
# keeps image values in the sigmoid's responsive range for unit-scale spectra
_GAIN = 4.0
_EPS = 1e-3  # images are clipped to [eps, 1 - eps] before the logit of from_images


class Fourier(Parameterization):
    """Images from a frequency-scaled spectrum in a decorrelated colour space."""

    name = "fft"

    class Params(Params):
        decay: float = Field(
            1.0, ge=0, le=3, allow_inf_nan=False, description="spectrum scale 1/f^decay"
        )

    def _scale(self, height: int, width: int) -> np.ndarray:
        fy = np.fft.fftfreq(height)[:, None]
        fx = np.fft.rfftfreq(width)[None, :]
        freq = np.sqrt(fx**2 + fy**2)
        return (1.0 / np.maximum(freq, 1.0 / max(height, width)) ** self.params.decay).astype(
            np.float32
        )

    def from_images(self, images: np.ndarray) -> np.ndarray:
        x = np.clip(np.asarray(images, np.float64), _EPS, 1 - _EPS)
        logits = np.log(x / (1 - x)) / _GAIN
        decorrelated = logits @ np.linalg.inv(_COLOUR).T  # per pixel: C^-1 v
        spectrum = np.fft.rfft2(decorrelated, axes=(1, 2)) / self._scale(*x.shape[1:3])[..., None]
        return np.stack([spectrum.real, spectrum.imag], axis=-1).astype(np.float32)

    def to_images(self, params: tf.Tensor) -> tf.Tensor:
        # Face models take square images, and the width then follows from the height
        # (an rfft of width w has w // 2 + 1 columns, odd or even w alike).
        height = width = params.shape[1]
        scale = tf.constant(self._scale(height, width)[None, :, :, None])
        spectrum = tf.complex(params[..., 0] * scale, params[..., 1] * scale)
        # irfft2 works on the last two axes: channels first for it, then back.
        channels_first = tf.transpose(spectrum, [0, 3, 1, 2])
        spatial = tf.signal.irfft2d(channels_first, fft_length=[height, width])
        decorrelated = tf.transpose(spatial, [0, 2, 3, 1])
        return tf.sigmoid(_GAIN * tf.tensordot(decorrelated, tf.constant(_COLOUR.T), 1))


@hookimpl
def register_parameterizations(register):
    register(Fourier)
