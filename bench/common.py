"""Shared benchmark plumbing: a NATS + Gyoza server stack on loopback, machine facts, percentiles.

A benchmark stack is started fresh per phase (its own temp dir, its own nats-server) so that one phase's leftovers
never skew the next one's numbers; the server process itself is launched as the tests launch it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

import gyoza
from gyoza.bus.connection import open_bus
from gyoza.bus.embedded import EmbeddedNats, nats_server_binary
from gyoza.bus.port import Bus
from gyoza.schema import AdHocRunIn
from gyoza.server.serve import server_processes
from gyoza.services.definitions import DefinitionService
from gyoza.services.runs import RunService
from gyoza.settings import Settings

# The launcher and the key are the test suite's: one way to start a server, for a measurement or a test.
from tests.processes import API_KEY as API_KEY
from tests.processes import GyozaServer as GyozaServer
from tests.processes import free_port as free_port


async def start_server(
    data_dir: Path, nats_url: str, env: dict[str, str] | None = None, workers: int = 1
) -> GyozaServer:
    """``python -m gyoza server start`` on an external NATS, awaited until every process answers (off the loop)."""
    return await asyncio.to_thread(GyozaServer(data_dir, nats_url, workers=workers, **(env or {})).start)


@dataclass
class Stack:
    """A running nats-server and Gyoza server, with a raw NATS client and an HTTP client for the bench."""

    nats_url: str
    server: GyozaServer
    nc: Client
    js: JetStreamContext
    http: httpx.AsyncClient
    work_dir: Path
    nats_pid: int


@contextlib.asynccontextmanager
async def stack(
    server_env: dict[str, str] | None = None, http_connections: int = 64, workers: int = 1
) -> AsyncIterator[Stack]:
    """Fresh NATS + Gyoza server in a temp dir; everything is stopped and removed on exit."""
    work_dir = Path(tempfile.mkdtemp(prefix="gyoza-bench-"))
    broker = EmbeddedNats(work_dir / "nats")
    nats_url = await broker.start()
    server: GyozaServer | None = None
    nc: Client | None = None
    try:
        server = await start_server(work_dir / "gyoza", nats_url, server_env, workers)
        nc = await nats.connect(nats_url, name="gyoza-bench", max_reconnect_attempts=0)
        limits = httpx.Limits(max_connections=http_connections, max_keepalive_connections=http_connections)
        async with httpx.AsyncClient(
            base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=30, limits=limits
        ) as http:
            assert broker.process is not None
            yield Stack(nats_url, server, nc, nc.jetstream(timeout=10), http, work_dir, broker.process.pid)
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        if server is not None:
            server.stop()
        broker.stop()
        if os.environ.get("BENCH_KEEP"):  # keep logs and stores for a post-mortem
            print(f"kept {work_dir}", file=sys.stderr)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def bare_nats() -> AsyncIterator[tuple[str, Path, Client, JetStreamContext]]:
    """Only a nats-server (for ceiling measurements without a Gyoza server competing for the CPU)."""
    work_dir = Path(tempfile.mkdtemp(prefix="gyoza-bench-nats-"))
    broker = EmbeddedNats(work_dir / "nats")
    url = await broker.start()
    nc = await nats.connect(url, name="gyoza-bench", max_reconnect_attempts=0)
    try:
        yield url, work_dir, nc, nc.jetstream(timeout=10)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
        broker.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


async def bounded_gather(count: int, concurrency: int, work: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """Run ``work(i)`` for i in range(count) with at most ``concurrency`` in flight; results in order."""
    results: list[Any] = [None] * count
    next_index = iter(range(count))

    async def lane() -> None:
        for i in next_index:
            results[i] = await work(i)

    await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))
    return results


async def until(predicate: Callable[[], Awaitable[bool]], limit_s: float, every: float = 0.1) -> bool:
    """Poll ``predicate`` until it holds or ``limit_s`` passes; returns whether it held."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(every)
    return False


class CpuMeter:
    """CPU time used by processes between ``start()`` and ``stop()``, as % of one core (100 = one core busy)."""

    def __init__(self, pids: dict[str, int | list[int]]) -> None:
        self.pids = pids
        self._ticks_per_s = os.sysconf("SC_CLK_TCK")
        self._start: dict[str, int] = {}
        self._started_at = 0.0

    def _ticks(self, pids: int | list[int]) -> int:
        total = 0
        for pid in pids if isinstance(pids, list) else [pids]:  # a list: one name for several processes, summed
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total

    def start(self) -> None:
        self._started_at = time.perf_counter()
        self._start = {name: self._ticks(pids) for name, pids in self.pids.items()}

    def stop(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self._started_at
        return {
            name: round(100 * (self._ticks(pids) - self._start[name]) / self._ticks_per_s / elapsed)
            for name, pids in self.pids.items()
        }


def default_workers() -> int:
    """What ``gyoza server start`` runs without ``--workers`` on this machine."""
    return server_processes(Settings())


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def machine_info() -> dict[str, Any]:
    try:
        nats_version = subprocess.run(
            [nats_server_binary(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        nats_version = f"unknown ({exc})"
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "nats_server": nats_version,
        "gyoza": gyoza.__version__,
        # Other work on the machine skews every number here: record how busy it was when the run started.
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }


@dataclass
class Outcome:
    """What a benchmark hands to ``bench.__main__``: config, raw results, goals checked and a table to print."""

    name: str
    config: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)
    goals: list[dict[str, Any]] = field(default_factory=list)
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def row(self, metric: str, value: str, goal: str = "", verdict: str = "") -> None:
        self.rows.append((metric, value, goal, verdict))

    def goal(self, metric: str, measured: float, target: float, higher_is_better: bool) -> str:
        met = measured >= target if higher_is_better else measured <= target
        self.goals.append({"metric": metric, "measured": measured, "target": target, "met": met})
        return "met" if met else "MISSED"


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def latency_summary(samples: list[float]) -> dict[str, Any]:
    return {
        "count": len(samples),
        "p50_ms": ms(percentile(samples, 50)),
        "p90_ms": ms(percentile(samples, 90)),
        "p99_ms": ms(percentile(samples, 99)),
        "max_ms": ms(max(samples)) if samples else float("nan"),
    }


# The run most benchmarks submit: a trivial ad hoc run that fits many times on a simulated worker.
RUN_CPU, RUN_RAM_MB = 1.0, 256


def bench_definition(name: str) -> dict[str, Any]:
    """The definition the submission benchmarks post runs of: two typed inputs, one CPU, 256 MiB."""
    return {
        "name": name,
        "version": "1",
        "image": "bench/noop:1",
        "input_specs": {"text": {"type": "string"}, "count": {"type": "int", "required": False, "default": 1}},
        "constraints": {"cpu": 1, "ram_mb": 256},
    }


RUN_BODY = {"image": "bench/noop:1", "constraints": {"cpu": RUN_CPU, "ram_mb": RUN_RAM_MB}}


@contextlib.asynccontextmanager
async def service_bus(nats_url: str, work_dir: Path) -> AsyncIterator[tuple[Bus, RunService]]:
    """The services layer in this process (for creating many runs faster than over HTTP)."""
    bus = await open_bus(Settings(nats_url=nats_url, data_dir=work_dir / "bench-client"))
    try:
        yield bus, RunService(bus, DefinitionService(bus))
    finally:
        await bus.close()


async def create_runs(runs: RunService, count: int, concurrency: int) -> tuple[float, list[str]]:
    """Create ``count`` runs through ``RunService.create_adhoc``; returns (runs/s, ids; the last one is newest)."""
    body = AdHocRunIn.model_validate(RUN_BODY)
    started = time.perf_counter()
    created = await bounded_gather(count - 1, concurrency, lambda _: runs.create_adhoc(body, None))
    last, _ = await runs.create_adhoc(body, None)  # strictly after the others: newest in GET /runs
    ids = [record.id for record, _ in created] + [last.id]
    return count / (time.perf_counter() - started), ids
