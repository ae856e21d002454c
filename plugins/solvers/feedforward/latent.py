"""The ``latent`` generator kind: a network from template to a parameterization's
parameters (a face generator's latent), whose images that parameterization renders.

The FaceTI idea (Shahreza et al. 2023) on MobileStyleGAN: an MLP maps the standardized
embedding through ``hidden_layers`` ReLU layers of ``hidden`` units to the latent. Its last
layer starts at zero, so an untrained network gives the parameterization's origin (for
``stylegan``, the average face). It trains on the parameterization's own samples (seeded
latent, image, the model's template of it: see :mod:`.sampling`), by regression onto their
latents and, optionally, the run's objective through the rendering.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import FaceModel, Parameterization, PrepareContext


def build_network(
    embedding_size: int,
    latent_shape: tuple[int, ...],
    hidden: int,
    hidden_layers: int,
    mean: np.ndarray,
    variance: np.ndarray,
    seed: int = 0,
) -> keras.Model:
    """embeddings (N, D) -> parameters (N, *latent_shape)."""
    embedding = keras.Input((embedding_size,), name="embedding")
    x = keras.layers.Normalization(mean=mean, variance=variance, name="standardize")(embedding)
    for i in range(hidden_layers):
        x = keras.layers.Dense(
            hidden,
            activation="relu",
            kernel_initializer=keras.initializers.HeUniform(seed=seed * 1000 + i),
            name=f"hidden{i + 1}",
        )(x)
    x = keras.layers.Dense(math.prod(latent_shape), kernel_initializer="zeros", name="to_latent")(x)
    latent = keras.layers.Reshape(latent_shape, name="latent")(x)
    # inputs as a list, as every generator kind takes them
    return keras.Model([embedding], latent, name="latent_generator")


def renderer(
    reference: dict, model: FaceModel, seed: int = 0, base_dir: Path = Path(".")
) -> Parameterization:
    """The parameterization a latent generator was trained with (``reference``: its name and
    parameters, as saved), prepared for ``model``."""
    from facerecon.core.registry import registry
    from facerecon.core.spec import PluginRef
    from facerecon.engine.runner import instantiate
    from facerecon.faces import photos as faces
    from facerecon.ops.forward import forward_for

    reg = registry()
    name = reference.get("name")
    if name not in reg.names("parameterization"):
        raise FaceReconError(
            f"the latent generator renders through parameterization {name!r}, which is not "
            f"installed (installed: {', '.join(reg.names('parameterization'))})"
        )
    param = instantiate(reg, "parameterization", PluginRef(**reference))
    param.prepare(
        PrepareContext(
            model=model,
            forward=lambda x, taps: forward_for(model, taps).numpy(x),
            guides=None,
            load_images=lambda src, align: faces.chips(model, src, align, base_dir),
            seed=seed,
        )
    )
    return param


def latent_shape(param: Parameterization, where: str) -> tuple[int, ...]:
    """The parameters' shape per image, from one seeded sample."""
    sample = param.sample(1, 0)
    if sample is None:
        raise FaceReconError(
            f"{where}: kind 'latent' needs a parameterization with samples of its own (e.g. "
            f"stylegan); {param.name!r} has none"
        )
    return tuple(int(n) for n in np.shape(sample)[1:])


def compiled(network: keras.Model, render: Callable[[tf.Tensor], tf.Tensor]) -> Callable:
    """One traced function from embeddings to rendered images, traced once per batch size:
    a graph reader's shape arithmetic keeps the image's static shape only at a known batch."""
    return tf.function(lambda e: render(network([e], training=False)))
