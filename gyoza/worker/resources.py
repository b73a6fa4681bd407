"""What this machine offers (SPEC §6): CPU from affinity and cgroup quota, RAM from the cgroup limit or physical
memory, GPUs from ``nvidia-smi`` (absent or failing means none). Flags override every detected value."""

from __future__ import annotations

import csv
import io
import logging
import os
import subprocess
from pathlib import Path

from gyoza.schema import GpuInfo, WorkerResources

log = logging.getLogger(__name__)

NVIDIA_SMI_QUERY = ["--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
_UNLIMITED = 1 << 60


def detect_cpu(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float:
    """Cores usable by this process: the affinity mask, capped by a cgroup CPU quota (v2 or v1)."""
    cores = float(len(os.sched_getaffinity(0)))
    quota = _cgroup_cpu_quota(cgroup_root)
    return min(cores, quota) if quota else cores


def _cgroup_cpu_quota(root: Path) -> float | None:
    v2 = root / "cpu.max"
    if v2.is_file():
        quota, _, period = v2.read_text().strip().partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    quota_file, period_file = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
    if quota_file.is_file() and period_file.is_file():
        quota_us, period_us = int(quota_file.read_text()), int(period_file.read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    return None


def detect_ram_mb(cgroup_root: Path = Path("/sys/fs/cgroup"), meminfo: Path = Path("/proc/meminfo")) -> int:
    """RAM in MiB: the cgroup memory limit when one is set, else physical memory."""
    physical = _physical_ram_bytes(meminfo)
    limit = _cgroup_memory_limit(cgroup_root)
    usable = min(physical, limit) if limit else physical
    return usable // (1024 * 1024)


def _physical_ram_bytes(meminfo: Path) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cgroup_memory_limit(root: Path) -> int | None:
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        if path.is_file():
            raw = path.read_text().strip()
            if raw != "max" and int(raw) < _UNLIMITED:
                return int(raw)
    return None


def detect_gpus(nvidia_smi: str = "nvidia-smi") -> list[GpuInfo]:
    """One entry per GPU from nvidia-smi's CSV; no nvidia-smi, a failure or unreadable lines mean no GPUs."""
    try:
        result = subprocess.run(
            [nvidia_smi, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        log.warning("nvidia-smi failed (exit %s): assuming no GPUs", result.returncode)
        return []
    return parse_nvidia_smi(result.stdout)


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    gpus = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if len(row) < 4:
            continue
        index, uuid, name, memory = (field.strip() for field in row[:4])
        try:
            gpus.append(GpuInfo(index=int(index), uuid=uuid, name=name, vram_mb=int(float(memory))))
        except ValueError:
            log.warning("ignoring unreadable nvidia-smi line: %s", ", ".join(row))
    return gpus


def detect_resources(cpu: float | None = None, ram_mb: int | None = None, gpus: str = "auto") -> WorkerResources:
    """Detected resources with flag overrides. ``gpus``: ``auto`` (nvidia-smi), ``none``, or indices ``0,1``."""
    found = [] if gpus == "none" else detect_gpus()
    if gpus not in ("auto", "none"):
        wanted = {int(part) for part in gpus.split(",") if part.strip()}
        found = [gpu for gpu in found if gpu.index in wanted]
    return WorkerResources(
        cpu=cpu if cpu is not None else detect_cpu(),
        ram_mb=ram_mb if ram_mb is not None else detect_ram_mb(),
        gpus=found,
    )
