"""``laplacian``: Laplacian-pyramid spectrum prior, Eq. 12 of the paper (Appendix C).

R = sum_{n=1..N} (||L_n(p)|| - N_L * 2^(beta*n))^2 with the paper's indexing, that of
:func:`facerecon.ops.pyramid.split`: L_k = g_k - expand(g_{k+1}), g_0 = p, so L_0 is the finest
band and, as in Eq. 12, is left out. ||.|| is the RMS of the band (a departure from the
paper's plain norm), so N_L is a per-pixel amplitude independent of the image size.
"""

from __future__ import annotations

import tensorflow as tf
from pydantic import Field

from facerecon import Params, Regularizer, hookimpl
from facerecon.ops.pyramid import split


class LaplacianPyramid(Regularizer):
    """Pulls each band's norm to N_L * 2^(beta*n): favours a natural power spectrum."""

    name = "laplacian"

    class Params(Params):
        levels: int = Field(
            4, ge=1, le=8, description="N: the bands L_1 (second finest) .. L_N are pulled"
        )
        beta: float = Field(1.0, description="spectral slope: band n aims at N_L * 2^(beta*n)")
        norm: float = Field(0.01, ge=0, description="N_L, the component norm")

    def __call__(self, images: tf.Tensor, taps: dict[str, tf.Tensor]) -> tf.Tensor:
        p = self.params
        # split gives L_0 .. L_N and the residual; Eq. 12 sums n = 1..N.
        bands = split(images, p.levels + 1)[1:-1]
        terms = []
        for n, band in enumerate(bands, start=1):
            rms = tf.sqrt(tf.reduce_mean(tf.square(band), axis=[1, 2, 3]) + 1e-12)
            terms.append(tf.square(rms - p.norm * 2.0 ** (p.beta * n)))
        return tf.add_n(terms)


@hookimpl
def register_regularizers(register):
    register(LaplacianPyramid)
