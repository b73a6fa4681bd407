"""Right-sizing (issue 13.3): what a definition's finished attempts really used, and the request that would have fit
95 % of them with a margin. Pure: the server hands in the attempts' measured usage and the current request."""

from __future__ import annotations

import math

from gyoza.schema import AttemptUsage, Constraints, DefinitionUsage, Percentiles

# The suggestion is the 95th percentile of the peaks plus this margin, rounded up to a whole step.
MARGIN = 1.2
RAM_STEP_MB = 64
VRAM_STEP_MB = 256
CPU_STEP = 0.1


def percentiles(values: list[float]) -> Percentiles | None:
    """Nearest-rank p50 and p95, and the max; None for no values."""
    if not values:
        return None
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(math.ceil(p * len(ordered)) - 1, 0)]

    return Percentiles(p50=rank(0.5), p95=rank(0.95), max=ordered[-1])


def _round_up(value: float, step: float) -> float:
    return math.ceil(value * MARGIN / step - 1e-9) * step


def summarise(name: str, usages: list[AttemptUsage], requested: Constraints) -> DefinitionUsage:
    measured = [u for u in usages if u.samples > 0]
    cpu = percentiles([u.cpu_peak for u in measured])
    ram = percentiles([float(u.ram_peak_mb) for u in measured])
    vram = percentiles([float(max(g.vram_peak_mb for g in u.gpus)) for u in measured if u.gpus])
    suggested: dict[str, float] = {}
    if cpu is not None and cpu.p95 > 0:
        suggested["cpu"] = round(_round_up(cpu.p95, CPU_STEP), 1)
    if ram is not None and ram.p95 > 0:
        suggested["ram_mb"] = _round_up(ram.p95, RAM_STEP_MB)
    if vram is not None and vram.p95 > 0:
        suggested["vram_mb"] = _round_up(vram.p95, VRAM_STEP_MB)
    current = {"cpu": requested.cpu, "ram_mb": requested.ram_mb, "vram_mb": requested.vram_mb}
    return DefinitionUsage(
        name=name, attempts=len(measured), cpu_peak=cpu, ram_peak_mb=ram, vram_peak_mb=vram,
        requested=current, suggested=suggested,
    )  # fmt: skip
