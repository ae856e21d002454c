"""Weight schedules: the host, not each regularizer, decides how a weight moves over steps."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from facerecon.core.kinds import Params


class Schedule(Params):
    """``constant``; ``exponential`` (w * rate**t); ``linear`` (w to ``end`` over ``steps``)."""

    model_config = ConfigDict(allow_inf_nan=False)  # weights are float32 in the objective
    kind: Literal["constant", "exponential", "linear"] = "constant"
    rate: float | None = Field(None, gt=0, le=1, description="exponential: factor per step")
    end: float | None = Field(
        None, ge=0, le=3.4028235e38, description="linear: weight reached at `steps`"
    )
    steps: int | None = Field(None, ge=1, description="linear: steps to reach `end`")

    @model_validator(mode="after")
    def _needs(self) -> Schedule:
        needed = {"constant": (), "exponential": ("rate",), "linear": ("end", "steps")}[self.kind]
        missing = [key for key in needed if getattr(self, key) is None]
        if missing:
            raise ValueError(f"schedule kind {self.kind!r} needs {', '.join(missing)}")
        return self

    def at(self, weight: float, step: int) -> float:
        """The weight in force at ``step`` (0-based)."""
        if self.kind == "exponential":
            return weight * self.rate**step
        if self.kind == "linear":
            frac = min(step / self.steps, 1.0)
            return weight + (self.end - weight) * frac
        return weight
