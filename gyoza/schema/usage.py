"""What an attempt really used (issue 13.3): sampled by its worker while it ran, stored on the attempt, summed up
per definition by ``GET /definitions/{name}/usage`` into a suggested request."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gyoza.schema._base import Part, Record

NonNegative = Annotated[float, Field(ge=0, le=1e12)]
Count = Annotated[int, Field(ge=0, le=1 << 40)]


class GpuUsage(Part):
    """One assigned GPU, sampled with ``nvidia-smi`` (the device's memory in use, whoever holds it)."""

    index: Annotated[int, Field(ge=0, le=1024)]
    vram_peak_mb: Count = 0
    vram_mean_mb: Count = 0
    util_peak: Annotated[int, Field(ge=0, le=100)] = 0
    util_mean: Annotated[int, Field(ge=0, le=100)] = 0


class AttemptUsage(Part):
    """Peak and mean of what the attempt's container used over ``samples`` samples (CPU in cores)."""

    samples: Count = 0
    cpu_peak: NonNegative = 0.0
    cpu_mean: NonNegative = 0.0
    ram_peak_mb: Count = 0
    ram_mean_mb: Count = 0
    gpus: Annotated[list[GpuUsage], Field(max_length=64)] = Field(default_factory=list)


class Percentiles(Record):
    p50: float
    p95: float
    max: float


class DefinitionUsage(Record):
    """GET /definitions/{name}/usage: the peaks of its last finished attempts that were measured, and requests that
    would have fit 95 % of them with a margin (None where nothing was measured)."""

    name: str
    attempts: int
    cpu_peak: Percentiles | None
    ram_peak_mb: Percentiles | None
    vram_peak_mb: Percentiles | None
    requested: dict[str, float]
    suggested: dict[str, float]
