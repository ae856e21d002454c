"""The experiment spec as data: the pydantic models a YAML spec is validated into.

Reading and checking a spec against the installed plugins is :mod:`facerecon.engine.validation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from facerecon.core.schedules import Schedule

#: The largest float32: a larger weight or bound becomes infinite on the way to the model.
FLOAT32_MAX = 3.4028235e38


class _Strict(BaseModel):
    # NaN and infinity are never meant: `lr: .inf` would only diverge at run time
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PluginRef(BaseModel):
    """A plugin by name; every other key is that plugin's parameter."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RegularizerRef(PluginRef):
    """A regularizer with its weight and weight schedule (owned by the host)."""

    weight: float = Field(1.0, ge=0, le=FLOAT32_MAX)  # the objective computes in float32
    schedule: Schedule = Schedule()
    label: str | None = Field(None, description="name of the term in logs (default: the name)")


HOST_KEYS = {
    "model": {"name"},
    "metric": {"name"},
    "solver": {"name"},
    "regularizer": {"name", "weight", "schedule", "label"},
    "transform": {"name"},
    "parameterization": {"name"},
    "detector": {"name"},
}


class ImageRef(_Strict):
    """A face photo (path, relative to the spec, or ``builtin:NAME``)."""

    image: str
    align: bool = Field(True, description="detect and align the face; false for tight crops")


class TargetRef(_Strict):
    """A target: a photo to embed, or an embedding file (.npy, one row per target)."""

    image: str | None = None
    embedding: str | None = None
    align: bool = True
    normalized: bool = Field(
        False, description="the embedding is L2-normalized (F(p) is normalized to match)"
    )
    scale: float = Field(
        1.0, gt=0, le=1000, description="multiply the target embedding (paper, Fig. 8)"
    )
    photo: str | None = Field(
        None,
        description="with `embedding`: the photo the template was made from, for the judges' "
        "type-I scores (never shown to the solver)",
    )
    same_person: list[str] = Field(
        [], description="other photos of the target's person, for the judges' type-II scores"
    )

    @model_validator(mode="after")
    def _one_source(self) -> TargetRef:
        if (self.image is None) == (self.embedding is None):
            raise ValueError("give exactly one of `image` or `embedding`")
        if self.photo is not None and self.image is not None:
            raise ValueError("`photo` goes with `embedding`; with `image`, the image is the photo")
        return self


class LossSpec(_Strict):
    metric: PluginRef = PluginRef(name="l2")
    regularizers: list[RegularizerRef] = []


class InitSpec(_Strict):
    """Where the images start: seeded noise, the guide, the mean face, or a given image."""

    kind: Literal["noise", "guide", "mean", "image"] = "noise"
    image: str | None = None
    noise: float = Field(
        0.1,
        ge=0,
        le=1,
        description="noise std around gray (kind: noise); for the other kinds, around the "
        "start image of every restart after the first",
    )
    images: str = Field(
        "builtin:lfw", description="the collection whose mean face starts the solve (kind: mean)"
    )
    align: bool = Field(
        False, description="align the collection's faces (kind: mean); false for tight crops"
    )
    nearest: int | None = Field(
        None,
        ge=1,
        description="kind: mean: average only the k faces of the collection whose templates "
        "are closest to each target's, among those the optimized model calls other people "
        "(needs only the template; a start image of the person's sex, age and skin)",
    )

    @model_validator(mode="after")
    def _image(self) -> InitSpec:
        if (self.kind == "image") != (self.image is not None):
            raise ValueError("`image` is required with kind: image, and only then")
        if self.nearest is not None and self.kind != "mean":
            raise ValueError("`nearest` goes with kind: mean, and only there")
        return self


class TransformsSpec(_Strict):
    """Random transforms the model sees the images through at every step."""

    samples: int = Field(1, ge=1, le=64, description="random draws per image and step (K)")
    chain: list[PluginRef] = Field([], description="transforms, applied in order")


class JudgesSpec(_Strict):
    """Who scores the kept reconstructions after the solve (never part of the loss)."""

    models: list[str] | None = Field(
        None,
        description="face models that judge identity; default: every available model "
        "other than the one optimized",
    )
    detector: str | None = Field("mtcnn", description="a face detector; null for none")
    impostors: str | None = Field(
        None,
        description="photos of other people (e.g. builtin:radar): each judge also reports "
        "a reconstruction's highest cosine to any of them",
    )


class TrackingSpec(_Strict):
    enabled: bool = True
    experiment: str = "facerecon"
    run_name: str | None = None
    image_every: int = Field(25, ge=1, description="log step images every N steps")
    images: Literal["all", "final", "none"] = Field(
        "all",
        description="face images the store keeps: step images and final panels (all), the "
        "final panels only (final), or none (metrics, tables and spec only)",
    )
    parent_run_id: str | None = Field(None, description="set by sweeps: the parent run")


class VariantRef(_Strict):
    """One explicit sweep variant: key paths (``solver.lr``, ``loss.regularizers[0].weight``)
    and the values they take."""

    name: str | None = None
    set: dict[str, Any] = Field(min_length=1)


class ResourcesSpec(_Strict):
    """What one variant needs: a Ray task reserves it; a local worker gets `cpus` threads."""

    cpus: float = Field(1.0, gt=0, description="CPU cores per variant")
    gpus: float = Field(0.0, ge=0, description="GPUs per variant (Ray only)")


class SweepSpec(_Strict):
    """A parameter study: a grid over key paths, and/or explicit variants."""

    grid: dict[str, list[Any]] = Field({}, description="key path -> values (cartesian product)")
    variants: list[VariantRef] = Field([], description="explicit variants, after the grid's")
    workers: int = Field(1, ge=1, le=64, description="local worker processes")
    resources: ResourcesSpec = ResourcesSpec()

    @model_validator(mode="after")
    def _not_empty(self) -> SweepSpec:
        if not self.grid and not self.variants:
            raise ValueError("a sweep needs a `grid` or `variants`")
        empty = [key for key, values in self.grid.items() if not values]
        if empty:
            raise ValueError(f"empty grid for {', '.join(empty)}: give at least one value")
        return self


class Spec(_Strict):
    """A whole experiment."""

    name: str
    description: str = ""
    model: PluginRef = PluginRef(name="dlib-resnet")
    targets: list[TargetRef] = Field(min_length=1)
    guides: list[ImageRef] = []
    loss: LossSpec = LossSpec()
    solver: PluginRef = PluginRef(name="adam")
    parameterization: PluginRef = PluginRef(name="pixels")
    transforms: TransformsSpec = TransformsSpec()
    init: InitSpec = InitSpec()
    restarts: int = Field(1, ge=1, description="random restarts per target and guide")
    seed: int = 0
    judges: JudgesSpec = JudgesSpec()
    tracking: TrackingSpec = TrackingSpec()
    sweep: SweepSpec | None = None
    base_dir: Path = Field(Path("."), exclude=True, description="where relative paths start")

    def resolved(self) -> dict[str, Any]:
        """The spec with every default filled in, as plain data."""
        return self.model_dump(mode="json", exclude={"base_dir"})


#: result keys the objective writes itself; a regularizer's label must not hide one
RESERVED_LABELS = ("total", "embedding", "distance", "cosine")


def term_labels(regularizers: list[RegularizerRef]) -> list[str]:
    """Each regularizer's name in results and logs: its label, or its name (``tv_2``, ...
    for repeats)."""
    labels, seen = [], {}
    for ref in regularizers:
        seen[ref.name] = seen.get(ref.name, 0) + 1
        count = seen[ref.name]
        labels.append(ref.label or (ref.name if count == 1 else f"{ref.name}_{count}"))
    return labels
