"""What a worker offers (SPEC §6): CPU and RAM from fake cgroup (v1 and v2) and meminfo files, GPUs from a fake
``nvidia-smi``. Flags override detection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gyoza.worker.resources import detect_cpu, detect_gpus, detect_ram_mb, detect_resources, parse_nvidia_smi

AFFINITY = float(len(os.sched_getaffinity(0)))
MIB = 1024 * 1024


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def meminfo(tmp_path: Path) -> Path:
    return write(tmp_path / "meminfo", "MemTotal:       16777216 kB\nMemFree:         1234 kB\n")  # 16 GiB


# --- CPU -----------------------------------------------------------------------------------------------------------


def test_cpu_without_cgroup_quota_is_the_affinity_mask(tmp_path: Path) -> None:
    assert detect_cpu(tmp_path) == AFFINITY


def test_cpu_cgroup_v2_quota_caps_the_cores(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", "25000 100000\n")
    assert detect_cpu(tmp_path) == 0.25


def test_cpu_cgroup_v2_max_means_no_quota(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", "max 100000\n")
    assert detect_cpu(tmp_path) == AFFINITY


def test_cpu_quota_above_the_affinity_does_not_raise_it(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", f"{int(AFFINITY + 8) * 100000} 100000\n")
    assert detect_cpu(tmp_path) == AFFINITY


def test_cpu_cgroup_v1_quota(tmp_path: Path) -> None:
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "50000\n")
    write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert detect_cpu(tmp_path) == 0.5


def test_cpu_cgroup_v1_unlimited_quota(tmp_path: Path) -> None:
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1\n")
    write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert detect_cpu(tmp_path) == AFFINITY


# --- RAM -----------------------------------------------------------------------------------------------------------


def test_ram_without_cgroup_limit_is_physical_memory(tmp_path: Path, meminfo: Path) -> None:
    assert detect_ram_mb(tmp_path / "cgroup", meminfo) == 16384


def test_ram_cgroup_v2_limit(tmp_path: Path, meminfo: Path) -> None:
    write(tmp_path / "cgroup" / "memory.max", f"{2048 * MIB}\n")
    assert detect_ram_mb(tmp_path / "cgroup", meminfo) == 2048


def test_ram_cgroup_v2_max_means_physical(tmp_path: Path, meminfo: Path) -> None:
    write(tmp_path / "cgroup" / "memory.max", "max\n")
    assert detect_ram_mb(tmp_path / "cgroup", meminfo) == 16384


def test_ram_cgroup_v1_limit(tmp_path: Path, meminfo: Path) -> None:
    write(tmp_path / "cgroup" / "memory" / "memory.limit_in_bytes", f"{512 * MIB}\n")
    assert detect_ram_mb(tmp_path / "cgroup", meminfo) == 512


def test_ram_cgroup_v1_unlimited_sentinel_means_physical(tmp_path: Path, meminfo: Path) -> None:
    # cgroup v1 reports "no limit" as a huge page-rounded number, not as "max".
    write(tmp_path / "cgroup" / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")
    assert detect_ram_mb(tmp_path / "cgroup", meminfo) == 16384


def test_ram_limit_above_physical_memory_is_capped(tmp_path: Path, meminfo: Path) -> None:
    write(tmp_path / "cgroup" / "memory.max", f"{64 * 1024 * MIB}\n")
    assert detect_ram_mb(tmp_path / "cgroup", meminfo) == 16384


# --- GPUs ----------------------------------------------------------------------------------------------------------


def test_parse_nvidia_smi_reads_every_gpu() -> None:
    gpus = parse_nvidia_smi("0, GPU-aaaa, NVIDIA A100-SXM4-40GB, 40960\n1, GPU-bbbb, NVIDIA A100-SXM4-40GB, 40960\n")
    assert [(g.index, g.uuid, g.name, g.vram_mb) for g in gpus] == [
        (0, "GPU-aaaa", "NVIDIA A100-SXM4-40GB", 40960),
        (1, "GPU-bbbb", "NVIDIA A100-SXM4-40GB", 40960),
    ]


def test_parse_nvidia_smi_skips_lines_with_unavailable_fields() -> None:
    text = "0, GPU-aaaa, NVIDIA A100, [N/A]\n[N/A], GPU-bbbb, NVIDIA A100, 40960\n2, GPU-cccc, [N/A], 24576\n"
    gpus = parse_nvidia_smi(text)
    # An unknown memory size or index makes the GPU unusable for placement; an unknown name does not.
    assert [(g.index, g.name, g.vram_mb) for g in gpus] == [(2, "[N/A]", 24576)]


def test_parse_nvidia_smi_ignores_blank_and_short_lines() -> None:
    assert parse_nvidia_smi("") == []
    assert parse_nvidia_smi("\nNo devices were found\n0, GPU-a\n") == []


def fake_nvidia_smi(bin_dir: Path, body: str) -> Path:
    script = write(bin_dir / "nvidia-smi", f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


def test_detect_gpus_asks_nvidia_smi_for_csv(tmp_path: Path) -> None:
    args = tmp_path / "args"
    script = fake_nvidia_smi(tmp_path, f'echo "$@" > {args}\necho "0, GPU-aaaa, NVIDIA L4, 23034"')
    [gpu] = detect_gpus(str(script))
    assert (gpu.index, gpu.vram_mb) == (0, 23034)
    assert args.read_text().split() == ["--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]


def test_failing_nvidia_smi_means_no_gpus(tmp_path: Path) -> None:
    # The usual failure: the tool exists but the driver does not answer; whatever it printed is not trusted.
    script = fake_nvidia_smi(
        tmp_path, 'echo "0, GPU-aaaa, NVIDIA A100, 40960"\necho "NVIDIA-SMI has failed" >&2\nexit 1'
    )
    assert detect_gpus(str(script)) == []


def test_missing_nvidia_smi_means_no_gpus(tmp_path: Path) -> None:
    assert detect_gpus(str(tmp_path / "no-such-nvidia-smi")) == []


def test_flags_override_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = tmp_path / "calls"
    fake_nvidia_smi(
        tmp_path / "bin",
        f'echo called >> {calls}\necho "0, GPU-aaaa, NVIDIA A100, 40960"\necho "1, GPU-bbbb, NVIDIA A100, 40960"',
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")

    chosen = detect_resources(cpu=2.5, ram_mb=1000, gpus="1")
    assert (chosen.cpu, chosen.ram_mb, [g.uuid for g in chosen.gpus]) == (2.5, 1000, ["GPU-bbbb"])
    assert [g.index for g in detect_resources(cpu=1, ram_mb=1, gpus="auto").gpus] == [0, 1]
    runs_before = calls.read_text().count("called")
    assert detect_resources(cpu=1, ram_mb=1, gpus="none").gpus == []
    assert calls.read_text().count("called") == runs_before, "--gpus none never runs nvidia-smi"
