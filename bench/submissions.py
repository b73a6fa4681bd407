"""The submissions benchmark (issue 6): durable run submissions per second over HTTP.

``POST /definitions/{name}/runs`` (a definition with two input specs, a small JSON body) from a closed-loop load
generator in its own process (``bench.loadgen``, raw HTTP/1.1 keep-alive: cheap on the CPU the server needs), at 32
and 128 connections. Every 201 means the run record is in JetStream (KV create acknowledged) and its run request
published; the bench checks afterwards that the bucket holds at least as many runs as 201s were counted.

Ceiling, in the same run and loaded the same way: ``bench.ceiling_app``, a bare Quart + Hypercorn endpoint in its own
process that parses a body of the same bytes with the same pydantic model and dumps a response of the same size.
No worker is online, so every run stays PENDING (the scheduler still consumes each run request).

Both are measured with 1 and 2 server processes (``gyoza server start --workers N``; N ceiling processes on one
SO_REUSEPORT port), and with the default (one per usable core) when that is another number. The goals are judged
on the default process count, the fraction against the ceiling on *one* process (issue 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import API_KEY, CpuMeter, Outcome, bench_definition, default_workers, free_port, stack
from bench.loadgen import run_loadgen
from bench.profiling import Profiler
from tests.processes import child_pids

DEFINITION = bench_definition("bench-submit")
BODY = {"inputs": {"text": "hello from the submissions benchmark", "count": 3}, "priority": 5}
PATH = f"/definitions/{DEFINITION['name']}/runs"

GOALS = {"submissions_per_s": 2_000.0, "fraction_of_ceiling": 0.75}


@dataclass
class Config:
    connections: tuple[int, ...] = (32, 128)
    workers: tuple[int, ...] = tuple(sorted({1, 2, default_workers()}))
    warmup_s: float = 3.0
    measure_s: float = 10.0
    profile: bool = False

    @classmethod
    def quick(cls) -> Config:
        return cls(warmup_s=2.0, measure_s=5.0)


def spec(url: str, connections: int, cfg: Config, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "url": url, "path": PATH, "method": "POST", "body": BODY, "headers": headers, "connections": connections,
        "warmup_s": cfg.warmup_s, "measure_s": cfg.measure_s,
    }  # fmt: skip


@contextlib.asynccontextmanager
async def ceiling_server(sample: Path, processes: int) -> AsyncIterator[tuple[str, list[int]]]:
    """``processes`` ceiling apps on one port, each answering (so the load spreads over all of them)."""
    port = free_port()
    started = [await start_ceiling_app(port, sample) for _ in range(processes)]
    url = f"http://127.0.0.1:{port}"
    try:
        await every_process_answers(url, processes, lambda: any(p.returncode is not None for p in started))
        yield url, [p.pid for p in started]
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for process in started:
            await process.wait()


async def start_ceiling_app(port: int, sample: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.ceiling_app", str(port), str(sample),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def every_process_answers(url: str, processes: int, failed: Callable[[], bool]) -> None:
    """GET /health on new connections until ``processes`` distinct pids answered."""
    seen: set[int] = set()
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        while len(seen) < processes:
            if time.monotonic() > deadline or failed():
                raise RuntimeError(f"the ceiling app did not start (answering: {seen})")
            try:
                seen.add((await http.get("/health")).json()["pid"])
            except httpx.HTTPError:
                await asyncio.sleep(0.05)


async def phase_gyoza(cfg: Config, results_dir: Path) -> tuple[dict[str, Any], bytes]:
    """Each process count and concurrency level on a fresh stack; returns the results (by workers, then
    connections) and one real response body (the sample)."""
    results: dict[str, Any] = {}
    sample = b""
    for workers in cfg.workers:
        by_connections: dict[str, Any] = {}
        for connections in cfg.connections:
            by_connections[str(connections)], sample = await measure_gyoza(cfg, workers, connections, results_dir)
        results[str(workers)] = by_connections
    return results, sample


async def measure_gyoza(cfg: Config, workers: int, connections: int, results_dir: Path) -> tuple[dict[str, Any], bytes]:
    async with stack(workers=workers) as s:
        (await s.http.post("/definitions", json=DEFINITION)).raise_for_status()
        first = await s.http.post(PATH, json=BODY)
        first.raise_for_status()
        server_pids = [s.server.pid, *child_pids(s.server.pid)]  # the pool's parent and its server processes
        each: dict[str, int | list[int]] = {f"server_pid_{pid}": pid for pid in server_pids}  # shows an imbalance
        meter = CpuMeter({"server": server_pids, "nats_server": s.nats_pid, **each})
        profiler = None
        if cfg.profile:
            out = results_dir / f"profile-submissions-{workers}w-{connections}.txt"
            profiler = Profiler(server_pids[-1], out, cfg.measure_s)
        load = round(os.getloadavg()[0], 2)

        async def start_profiler_after_warmup(p: Profiler | None = profiler) -> None:
            if p is not None:
                await asyncio.sleep(cfg.warmup_s + 0.5)
                await p.start()

        headers = {"X-API-Key": API_KEY}
        result, _ = await asyncio.gather(
            run_loadgen(spec(s.server.url, connections, cfg, headers), meter), start_profiler_after_warmup()
        )
        stored = (await s.js.stream_info("KV_gyoza_runs")).state.messages
        result["runs_stored_after"] = stored
        # Every 201 counted in the window (plus warm-up, plus the sample) must be a stored run.
        result["durable_check"] = "ok" if stored >= result["statuses"].get("201", 0) + 1 else "FEWER STORED"
        result["loadavg_1m_before"] = load
        if profiler is not None:
            result["profile"] = await profiler.finish()
        return result, first.content


async def phase_ceiling(cfg: Config, sample: bytes, work_dir: Path) -> dict[str, Any]:
    sample_path = work_dir / "sample-response.json"
    sample_path.write_bytes(sample)
    results: dict[str, Any] = {}
    for processes in cfg.workers:
        by_connections: dict[str, Any] = {}
        async with ceiling_server(sample_path, processes) as (url, pids):
            for connections in cfg.connections:
                load = round(os.getloadavg()[0], 2)
                meter = CpuMeter({"server": pids})
                result = await run_loadgen(spec(url, connections, cfg, {"X-API-Key": API_KEY}), meter)
                result["loadavg_1m_before"] = load
                by_connections[str(connections)] = result
        results[str(processes)] = by_connections
    return results


async def run(quick: bool = False, profile: bool = False, results_dir: Path = Path("bench/results")) -> Outcome:
    cfg = Config.quick() if quick else Config()
    cfg.profile = profile
    out = Outcome("submissions", asdict(cfg))
    gyoza_results, sample = await phase_gyoza(cfg, results_dir)
    await asyncio.to_thread(results_dir.mkdir, parents=True, exist_ok=True)
    ceiling = await phase_ceiling(cfg, sample, results_dir)
    out.results = {
        "gyoza": gyoza_results, "ceiling": ceiling, "default_workers": default_workers(), "request_body": BODY,
        "definition": DEFINITION,
    }  # fmt: skip
    for workers in cfg.workers:
        for connections in cfg.connections:
            report(out, workers, connections, gyoza_results, ceiling)
    return out


def report(out: Outcome, workers: int, connections: int, gyoza: dict[str, Any], ceiling: dict[str, Any]) -> None:
    """The rows for one process count and concurrency; goals only for the default process count."""
    g, c = gyoza[str(workers)][str(connections)], ceiling[str(workers)][str(connections)]
    one = ceiling[str(min(int(w) for w in ceiling))][str(connections)]
    judged = workers == default_workers()
    where = f"{workers} process{'es' if workers > 1 else ''}, {connections} connections"
    out.row(
        f"ceiling: bare Quart+Hypercorn, {where}",
        f"{c['ok_per_s']:,.0f}/s, p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms; CPU % of a core: "
        f"server {c['cpu_percent_of_one_core']['server']}, loadgen {c['cpu_percent_of_one_core']['loadgen']}",
    )
    rate = (
        f"{g['ok_per_s']:,.0f}/s, p50 {g['p50_ms']} ms, p99 {g['p99_ms']} ms (non-2xx {g['requests'] - g['ok']}, "
        f"errors {sum(g['errors'].values())}, stored: {g['durable_check']})"
    )
    if judged:
        verdict = out.goal(f"submissions/s at {connections}", g["ok_per_s"], GOALS["submissions_per_s"], True)
        out.row(f"submissions, {where} (default)", rate, f">= {GOALS['submissions_per_s']:,.0f}/s", verdict)
    else:
        out.row(f"submissions, {where}", rate)
    same = g["ok_per_s"] / c["ok_per_s"] if c["ok_per_s"] else 0.0
    fraction = g["ok_per_s"] / one["ok_per_s"] if one["ok_per_s"] else 0.0
    cpu = g["cpu_percent_of_one_core"]
    detail = (
        f"{fraction:.0%} of 1 ceiling process, {same:.0%} of {workers}; CPU % of a core: server {cpu['server']}, "
        f"nats {cpu['nats_server']}, loadgen {cpu['loadgen']}; load {g['loadavg_1m_before']}"
    )
    if judged:
        verdict = out.goal(f"fraction of one-process ceiling at {connections}", round(fraction, 3),
                           GOALS["fraction_of_ceiling"], True)  # fmt: skip
        out.row(f"submissions / ceiling, {where}", detail, f">= {GOALS['fraction_of_ceiling']:.0%} of 1", verdict)
    else:
        out.row(f"submissions / ceiling, {where}", detail)
