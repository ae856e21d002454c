"""``feedforward``: train a generator on the objective, then reconstruct in one pass.

As a solver in a spec, it trains a generator on random embeddings with exactly the run's
objective (metric + weighted regularizers, guides included), then generates the spec's
targets - never seen in training - with it. The targets double as the probes whose images
and terms are reported every ``report_every`` training steps. The trained generator is
handed back in ``SolveResult.extras["generator"]``; logging it is the tracking side's job.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import Params, Solver, SolveResult, StepInfo
from facerecon.engine.objective import Objective
from facerecon.ops.forward import check_taps

from .checkpoint import Checkpoints
from .generator import Generator, GeneratorConfig, GeneratorParams
from .sampling import (
    EmbeddingSampler,
    GeneratedSampler,
    PhotoSampler,
    SamplingParams,
    generated,
    real_faces,
)
from .training import Settings, Trainer


class FeedForwardParams(Params):
    generator: GeneratorParams = Field(
        default_factory=GeneratorParams, description="architecture and initialization"
    )
    sampling: SamplingParams = Field(
        default_factory=SamplingParams, description="how training embeddings are drawn"
    )
    steps: int = Field(2000, ge=1, description="training steps")
    batch: int = Field(32, ge=1, description="random embeddings per training step")
    lr: float = Field(0.001, gt=0, description="Adam learning rate")
    lr_drops: dict[int, float] = Field(
        default_factory=dict,
        description="step -> Adam learning rate from that step on (a step schedule, e.g. "
        "{2500: 0.0003, 3750: 0.0001})",
    )
    report_every: int = Field(
        10, ge=1, description="probe the spec's targets every N steps (make image_every a multiple)"
    )
    checkpoints: str | None = Field(
        None, description="folder for checkpoints (relative to the working directory); resumes"
    )
    checkpoint_every: int = Field(100, ge=1, description="save a checkpoint every N steps")
    guide_weight: float = Field(
        0.0,
        ge=0,
        description="with generator.nearest: weight of each image's mean squared pixel "
        "distance to its own guide (what the guide regularizer does for the spec's guides)",
    )
    photo_weight: float = Field(
        0.0,
        ge=0,
        description="with sampling.kind photos: weight of each image's mean absolute pixel "
        "distance to the photo its embedding came from",
    )
    photo_layers: dict[str, float] = Field(
        default_factory=dict,
        description="with sampling.kind photos: model layer -> weight of each image's mean "
        "absolute distance to its photo's activations there (a perceptual term; one more "
        "forward pass of the untransformed images and photos per step)",
    )

    latent_weight: float = Field(
        0.0,
        ge=0,
        description="with sampling.kind generated: weight of the mean squared distance of "
        "each predicted latent to the latent its template came from",
    )
    train_objective: bool = Field(
        True,
        description="put the objective on the images of every training step; false (with "
        "latent_weight) trains on the latents alone, the objective scoring the probes: a "
        "latent generator's images cost a 1024-pixel synthesis and its gradient each",
    )

    @field_validator("lr_drops")
    @classmethod
    def _drops(cls, drops: dict[int, float], info: ValidationInfo) -> dict[int, float]:
        last = info.data.get("steps", 2) - 1
        for step, rate in drops.items():
            if not 0 < step <= last or rate <= 0:
                raise ValueError(f"{step}: {rate}: drop to a rate > 0 at a step from 1 to {last}")
        return drops

    @model_validator(mode="after")
    def _anchor(self) -> FeedForwardParams:
        if self.guide_weight > 0 and self.generator.nearest is None:
            raise ValueError(
                "guide_weight goes with generator.nearest; for the spec's guides, use the "
                "guide regularizer"
            )
        if (self.photo_weight > 0 or self.photo_layers) and self.sampling.kind != "photos":
            raise ValueError(
                "photo_weight and photo_layers need the photos: they go with sampling.kind photos"
            )
        generated = self.sampling.kind == "generated"
        if generated != (self.generator.kind == "latent"):
            raise ValueError(
                "sampling.kind 'generated' and generator.kind 'latent' go together: the "
                "samples' latents are what a latent generator learns to make"
            )
        if self.latent_weight > 0 and not generated:
            raise ValueError("latent_weight needs latents: it goes with sampling.kind generated")
        if not self.train_objective and self.latent_weight == 0:
            raise ValueError("train_objective: false leaves nothing to train on; set latent_weight")
        return self


class FeedForward(Solver):
    """Trains a generator network on the objective, then reconstructs in one pass (Sec. 4)."""

    name = "feedforward"
    Params = FeedForwardParams
    trains_generators = True

    @classmethod
    def load_generator(cls, source: str) -> Generator:
        from . import store

        return store.load(source)

    @classmethod
    def generate(cls, generator: str, embedding=None, **options):
        from .inference import generate

        return generate(generator, embedding, **options)

    @classmethod
    def evaluate(cls, spec, generators, **options):
        from .evaluation import evaluate
        from .tracking import log_evaluation

        evaluation = evaluate(spec, generators, **options)
        if spec.tracking.enabled:  # its own MLflow run
            evaluation.run_id = log_evaluation(
                evaluation, spec.tracking.experiment, f"evaluate-{spec.name}"
            )
        return evaluation

    def sampler(self, objective: Objective) -> EmbeddingSampler | PhotoSampler | GeneratedSampler:
        """The training embeddings' distribution, fitted to the model's real-face embeddings
        (or, for ``photos``, those faces and their mirror images themselves; for
        ``generated``, the parameterization's own samples)."""
        s = self.params.sampling
        context = objective.context
        if s.kind == "generated":
            return generated(
                objective.parameterization,
                context.forward,
                objective.model.name,
                s.samples,
                context.seed,
                progress=_sample_progress,
            )
        faces = real_faces(context.load_images(s.images, s.align), s.subset, s.images)
        if s.kind == "photos":
            faces = np.concatenate([faces, faces[:, :, ::-1]])
        embeddings, _ = context.forward(faces, [])
        if s.kind == "photos":
            return PhotoSampler(embeddings, faces)
        return EmbeddingSampler(s.kind, embeddings, s.shrinkage)

    def solve(
        self, objective: Objective, init: np.ndarray, on_step: Callable[[StepInfo], None]
    ) -> SolveResult:
        p = self.params
        context = objective.context
        if context is None:
            raise RuntimeError("the feedforward solver needs a prepared objective")
        config = GeneratorConfig.of(p.generator, objective.model, objective.parameterization)
        check_taps(objective.model, list(p.photo_layers), "solver.photo_layers")
        strangers = config.own_guides(objective.model)
        if strangers is not None and objective.guides is not None:
            raise FaceReconError(
                "solver.generator.nearest: the generator makes each template's guide; "
                "remove `guides` from the spec"
            )
        if config.guided and strangers is None and objective.guides is None:
            raise FaceReconError(
                "solver.generator.kind: 'guided' needs at least one entry under `guides` "
                "(or solver.generator.nearest)"
            )
        sampler = self.sampler(objective)
        mean, variance = sampler.mean, sampler.variance
        checkpoints = Checkpoints(p.checkpoints) if p.checkpoints else None
        stored = checkpoints.stored() if checkpoints else None
        if stored is not None:
            checkpoints.check(config)
            mean, variance = stored[1], stored[2]  # the network was built around these
        generator = Generator.build(config, mean, variance, seed=context.seed)
        if config.latent:
            generator.render_with(objective.parameterization)  # prepared for this run
        trainer = Trainer(
            generator,
            objective,
            sampler,
            Settings(
                p.steps,
                p.batch,
                p.lr,
                context.seed,
                p.report_every,
                p.checkpoint_every,
                p.guide_weight,
                p.photo_weight,
                p.photo_layers,
                p.lr_drops,
                p.latent_weight,
                p.train_objective,
            ),
            checkpoints,
            None if strangers is None else strangers.preload(),
        )
        steps, reason = trainer.run(on_step)
        images, _ = trainer.probe(objective.weights_at(max(steps - 1, 0)))
        return SolveResult(
            images=images,
            steps=steps,
            stop_reason=f"{reason}; generated in one pass",
            extras={"generator": generator, "steps_per_second": trainer.steps_per_second},
        )


def _sample_progress(ready: int, count: int) -> None:
    """One line per chunk of samples, so a long first run shows that it works."""
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"generated samples: {ready}/{count} (cached)")
