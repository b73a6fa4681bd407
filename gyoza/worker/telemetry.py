"""What an attempt uses while it runs (issue 13.3): CPU and RAM from the engine's stats of its container (cgroup
figures), and its GPUs' memory and utilisation from ``nvidia-smi``, summed up as peaks and means
(``AttemptUsage``) for its final report.

The GPU figures are the device's, whoever holds the memory: a GPU is given to one attempt at a time unless runs
share it by VRAM, and then each run sees the others' share too (an upper bound, which is the safe side for sizing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

from gyoza.schema import AttemptUsage, GpuUsage

log = logging.getLogger(__name__)

MB = 1024 * 1024
GPU_QUERY = ["--query-gpu=index,memory.used,utilization.gpu", "--format=csv,noheader,nounits"]
GPU_SAMPLE_S = 2.0


@dataclass
class Gauge:
    peak: float = 0.0
    total: float = 0.0
    count: int = 0

    def add(self, value: float) -> None:
        self.peak = max(self.peak, value)
        self.total += value
        self.count += 1

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


@dataclass
class UsageMeter:
    """Samples of one attempt, added from the stats thread and the GPU task, read once at its end."""

    cpu: Gauge = field(default_factory=Gauge)
    ram_mb: Gauge = field(default_factory=Gauge)
    gpus: dict[int, tuple[Gauge, Gauge]] = field(default_factory=dict)  # index -> (VRAM MB, utilisation %)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def container(self, cores: float | None, ram_mb: float) -> None:
        with self._lock:
            if cores is not None:
                self.cpu.add(cores)
            self.ram_mb.add(ram_mb)

    def gpu(self, index: int, vram_mb: float, utilisation: float) -> None:
        with self._lock:
            vram, util = self.gpus.setdefault(index, (Gauge(), Gauge()))
            vram.add(vram_mb)
            util.add(utilisation)

    def summary(self) -> AttemptUsage | None:
        """Peaks and means; None when nothing was sampled (an attempt shorter than the first sample)."""
        with self._lock:
            if not self.ram_mb.count and not self.gpus:
                return None
            gpus = [
                GpuUsage(index=index, vram_peak_mb=round(vram.peak), vram_mean_mb=round(vram.mean),
                         util_peak=min(round(util.peak), 100), util_mean=min(round(util.mean), 100))
                for index, (vram, util) in sorted(self.gpus.items())
            ]  # fmt: skip
            return AttemptUsage(
                samples=max(self.ram_mb.count, max((v.count for v, _ in self.gpus.values()), default=0)),
                cpu_peak=round(self.cpu.peak, 3), cpu_mean=round(self.cpu.mean, 3),
                ram_peak_mb=round(self.ram_mb.peak), ram_mean_mb=round(self.ram_mb.mean), gpus=gpus,
            )  # fmt: skip


def container_sample(stats: dict[str, Any]) -> tuple[float | None, float] | None:
    """(cores in use since the previous sample, RAM in MB) from one Docker stats entry; None when it holds no
    memory figures (the container is gone). RAM leaves out the reclaimable file cache, as ``docker stats`` does."""
    memory = stats.get("memory_stats") or {}
    if "usage" not in memory:
        return None
    details = memory.get("stats") or {}
    cache = details.get("inactive_file", details.get("total_inactive_file", details.get("cache", 0)))
    ram_mb = max(memory["usage"] - cache, 0) / MB
    cpu, previous = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    used = cpu.get("cpu_usage", {}).get("total_usage", 0) - previous.get("cpu_usage", {}).get("total_usage", 0)
    elapsed = cpu.get("system_cpu_usage", 0) - previous.get("system_cpu_usage", 0)
    online = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
    cores = used / elapsed * online if elapsed > 0 and used >= 0 and previous.get("system_cpu_usage") else None
    return cores, ram_mb


def parse_gpu_sample(text: str, gpu_ids: list[int]) -> list[tuple[int, float, float]]:
    """(index, VRAM MB in use, utilisation %) of the ``gpu_ids`` in ``nvidia-smi``'s CSV (unreadable lines skipped)."""
    found = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        try:
            index, used, utilisation = int(parts[0]), float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            continue
        if index in gpu_ids:
            found.append((index, used, utilisation))
    return found


async def sample_gpus(meter: UsageMeter, gpu_ids: list[int], nvidia_smi: str = "nvidia-smi") -> None:
    """Sample the attempt's GPUs every ``GPU_SAMPLE_S`` until cancelled; a failing ``nvidia-smi`` ends it quietly."""
    while True:
        try:
            done = await asyncio.to_thread(
                subprocess.run, [nvidia_smi, *GPU_QUERY], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("GPU sampling stops: %s", exc)
            return
        if done.returncode != 0:
            return
        for index, used, utilisation in parse_gpu_sample(done.stdout, gpu_ids):
            meter.gpu(index, used, utilisation)
        await asyncio.sleep(GPU_SAMPLE_S)


def follow_container_stats(stats: Any, meter: UsageMeter) -> None:
    """Feed the meter from a container's stats stream (``container.stats(stream=True, decode=True)``), in a thread,
    until the container ends."""
    with contextlib.suppress(Exception):  # the container went away: its last samples are in
        for entry in stats:
            sample = container_sample(entry)
            if sample is not None:
                meter.container(*sample)
