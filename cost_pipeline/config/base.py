"""Shared base of the configuration models: unknown keys are errors, models are immutable."""

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
