"""An attempt's usage below the runtime (issue 13.3): Docker stats entries read as cores and RAM the way ``docker
stats`` reads them, ``nvidia-smi`` samples of the attempt's GPUs only (a fake ``nvidia-smi`` on PATH), and the
summary of peaks and means."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from gyoza.worker import telemetry
from gyoza.worker.telemetry import UsageMeter, container_sample, follow_container_stats, parse_gpu_sample
from tests.waiting import until

MB = 1024 * 1024


def stats(total: int, system: int, before: tuple[int, int] | None, usage_mb: int, cache_mb: int) -> dict[str, object]:
    previous = {"cpu_usage": {"total_usage": before[0]}, "system_cpu_usage": before[1]} if before else {}
    return {
        "cpu_stats": {"cpu_usage": {"total_usage": total}, "system_cpu_usage": system, "online_cpus": 4},
        "precpu_stats": previous,
        "memory_stats": {"usage": usage_mb * MB, "stats": {"inactive_file": cache_mb * MB}},
    }


def test_a_docker_stats_entry_is_cores_and_ram_without_the_file_cache() -> None:
    # 2e9 ns of CPU over 4e9 ns of system time on 4 CPUs: 2 cores busy.
    assert container_sample(stats(3_000_000_000, 10_000_000_000, (1_000_000_000, 6_000_000_000), 300, 44)) == (
        2.0, 256.0,
    )  # fmt: skip
    first = container_sample(stats(1_000, 1_000, None, 10, 0))  # no previous sample yet: no CPU figure
    assert first == (None, 10.0)
    assert container_sample({"memory_stats": {}}) is None  # the container is gone


def test_the_summary_keeps_peaks_and_means_and_nothing_sampled_is_none() -> None:
    meter = UsageMeter()
    assert meter.summary() is None
    follow_container_stats(
        iter([stats(0, 1, None, 100, 0), stats(2_000, 2_000, (0, 1_000), 300, 0), {"memory_stats": {}}]), meter
    )
    meter.gpu(1, 8000, 50)
    meter.gpu(1, 12000, 90)
    usage = meter.summary()
    assert usage is not None
    assert (usage.samples, usage.ram_peak_mb, usage.ram_mean_mb, usage.cpu_peak) == (2, 300, 200, 8.0)
    assert [(g.index, g.vram_peak_mb, g.vram_mean_mb, g.util_peak, g.util_mean) for g in usage.gpus] == [
        (1, 12000, 10000, 90, 70)
    ]


def test_only_the_attempts_gpus_are_read() -> None:
    text = "0, 30000, 99\n1, 1200, 7\nnot, a, line\n"
    assert parse_gpu_sample(text, [1]) == [(1, 1200.0, 7.0)]


async def test_gpus_are_sampled_from_nvidia_smi_until_the_attempt_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\necho "0, 30000, 99"\necho "1, 1500, 40"\n')
    fake.chmod(0o755)
    monkeypatch.setattr(telemetry, "GPU_SAMPLE_S", 0.01)
    meter = UsageMeter()
    sampling = asyncio.create_task(telemetry.sample_gpus(meter, [1], str(fake)))
    await until(lambda: 1 in meter.gpus and meter.gpus[1][0].count >= 3, 5, interval=0.01, what="three samples")
    sampling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampling
    assert set(meter.gpus) == {1} and meter.gpus[1][0].peak == 1500
    await telemetry.sample_gpus(UsageMeter(), [0], str(tmp_path / "missing"))  # no nvidia-smi: ends quietly
