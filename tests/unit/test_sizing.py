"""Right-sizing arithmetic (issue 13.3): nearest-rank percentiles of the measured peaks, and a suggestion of the 95th
percentile plus 20 %, rounded up to whole steps; attempts without samples count for nothing."""

from __future__ import annotations

from gyoza.core.sizing import percentiles, summarise
from gyoza.schema import AttemptUsage, Constraints, GpuUsage


def test_percentiles_are_nearest_rank() -> None:
    assert percentiles([]) is None
    spread = percentiles([float(n) for n in range(1, 101)])
    assert spread is not None and (spread.p50, spread.p95, spread.max) == (50, 95, 100)
    assert percentiles([7.0]) == percentiles([7.0, 7.0])


def test_the_suggestion_fits_95_percent_with_a_margin() -> None:
    usages = [
        AttemptUsage(samples=3, cpu_peak=0.9, ram_peak_mb=1000, gpus=[GpuUsage(index=0, vram_peak_mb=9000)]),
        AttemptUsage(samples=3, cpu_peak=1.4, ram_peak_mb=1100, gpus=[GpuUsage(index=0, vram_peak_mb=10000)]),
        AttemptUsage(samples=0, ram_peak_mb=99999),  # never sampled: left out
    ]
    summary = summarise("embedder", usages, Constraints(cpu=4, ram_mb=16000, vram_mb=24000))
    assert summary.attempts == 2
    assert summary.suggested == {"cpu": 1.7, "ram_mb": 1344, "vram_mb": 12032}  # 1.68, 1320, 12000 rounded up
    assert summary.requested == {"cpu": 4, "ram_mb": 16000, "vram_mb": 24000}
