"""MobileStyleGAN (Belousov 2021): a StyleGAN2 FFHQ 1024x1024 generator distilled to 10 M
parameters, run from its OpenVINO IR as TensorFlow ops.

The mapping network takes z (B, 512) to w (B, 512); the synthesis network takes one style
that feeds its modulation layers, coarse to fine, and makes (B, 3, 1024, 1024) RGB in
[-1, 1]. Feeding the layers separately gives W+ (one style per layer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from facerecon.core.cache import cached_arrays
from facerecon.graphs.graph import Graph
from facerecon.graphs.openvino import load_ir

from . import weights

LATENT = 512
#: z drawn for the mean and spread of w
STATISTICS_SAMPLES = 4096


class MobileStyleGAN:
    """The mapping and synthesis networks, read from the IR files in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.mapping = load_ir(folder / "MappingNetwork.xml")
        self.synthesis = load_ir(folder / "SynthesisNetwork.xml")
        (self._z,) = self.mapping.parameters
        (self._style,) = self.synthesis.parameters
        (self._w,) = self.mapping.results
        (self._image,) = self.synthesis.results
        readers = [
            node.name
            for node in self.synthesis.nodes.values()
            if self._style in node.inputs and node.op == "MatMul"
        ]
        # One feed per modulation layer, coarse to fine: a coarser layer has more of the
        # graph downstream of it (everything the finer layers compute, and more).
        downstream = _downstream_counts(self.synthesis, readers)
        ordered = sorted(readers, key=lambda name: -downstream[name])
        self._layers = self.synthesis.split_feed(self._style, ordered)

    @property
    def layers(self) -> int:
        """How many styles a W+ latent holds (one per modulation layer)."""
        return len(self._layers)

    def map(self, z: tf.Tensor) -> tf.Tensor:
        """w (B, 512) for z (B, 512)."""
        (w,) = self.mapping.run({self._z: z}, [self._w])
        return w

    def synthesize(self, styles: tf.Tensor) -> tf.Tensor:
        """Frames (B, 1024, 1024, 3) in [0, 1] for styles (B, layers, 512)."""
        feeds = {self._style: tf.reduce_mean(styles, axis=1)}  # read only for its shape
        feeds.update({name: styles[:, i] for i, name in enumerate(self._layers)})
        (image,) = self.synthesis.run(feeds, [self._image])
        return tf.clip_by_value(tf.transpose(image, [0, 2, 3, 1]) * 0.5 + 0.5, 0.0, 1.0)

    def statistics(self) -> dict[str, np.ndarray]:
        """The mean and standard deviation of w over seeded normal z (cached)."""

        def compute() -> dict[str, np.ndarray]:
            z = np.random.default_rng(0).standard_normal((STATISTICS_SAMPLES, LATENT))
            run = tf.function(self.map)
            w = np.concatenate(
                [run(tf.constant(chunk, tf.float32)).numpy() for chunk in np.split(z, 32)]
            ).astype(np.float64)
            return {"mean": w.mean(0).astype(np.float32), "std": w.std(0).astype(np.float32)}

        key = f"{weights.PACKAGE}=={weights.VERSION} w over {STATISTICS_SAMPLES} z, seed 0"
        return cached_arrays("stylegan", "w-statistics", key, compute)


def _downstream_counts(graph: Graph, names: list[str]) -> dict[str, int]:
    """How many nodes depend, directly or not, on each of ``names``."""
    users: dict[str, list[str]] = {}
    for node in graph.nodes.values():
        for source in node.inputs:
            users.setdefault(source, []).append(node.name)
    counts = {}
    for name in names:
        seen, stack = set(), [name]
        while stack:
            for user in users.get(stack.pop(), []):
                if user not in seen:
                    seen.add(user)
                    stack.append(user)
        counts[name] = len(seen)
    return counts


_LOADED: dict[Path, MobileStyleGAN] = {}


def load(folder: Path) -> MobileStyleGAN:
    """The generator of ``folder``, read once per process."""
    if folder not in _LOADED:
        _LOADED[folder] = MobileStyleGAN(folder)
    return _LOADED[folder]
