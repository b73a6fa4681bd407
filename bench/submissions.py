"""The submissions benchmark (issue 6): durable run submissions per second over HTTP.

``POST /definitions/{name}/runs`` (a definition with two input specs, a small JSON body) from a closed-loop load
generator in its own process (``bench.loadgen``, raw HTTP/1.1 keep-alive: cheap on the CPU the server needs), at 32
and 128 connections. Every 201 means the run record is in JetStream (KV create acknowledged) and its run request
published; the bench checks afterwards that the bucket holds at least as many runs as 201s were counted.

Ceiling, in the same run and loaded the same way: ``bench.ceiling_app``, a bare Quart + Hypercorn endpoint in its own
process that parses a body of the same bytes with the same pydantic model and dumps a response of the same size.
No worker is online, so every run stays PENDING (the scheduler still consumes each run request).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import API_KEY, CpuMeter, Outcome, free_port, stack
from bench.loadgen import run_loadgen
from bench.profiling import Profiler

DEFINITION = {
    "name": "bench-submit",
    "version": "1",
    "image": "bench/noop:1",
    "input_specs": {"text": {"type": "string"}, "count": {"type": "int", "required": False, "default": 1}},
    "constraints": {"cpu": 1, "ram_mb": 256},
}
BODY = {"inputs": {"text": "hello from the submissions benchmark", "count": 3}, "priority": 5}
PATH = f"/definitions/{DEFINITION['name']}/runs"

GOALS = {"submissions_per_s": 2_000.0, "fraction_of_ceiling": 0.75}


@dataclass
class Config:
    connections: tuple[int, ...] = (32, 128)
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
async def ceiling_server(sample: Path) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.ceiling_app", str(port), str(sample),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if time.monotonic() > deadline or process.returncode is not None:
                    raise RuntimeError("the ceiling app did not start") from None
                await asyncio.sleep(0.05)
        yield url, process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()


async def phase_gyoza(cfg: Config, results_dir: Path) -> tuple[dict[str, Any], bytes]:
    """Each concurrency level on a fresh stack; returns the results and one real response body (the sample)."""
    results: dict[str, Any] = {}
    sample = b""
    for connections in cfg.connections:
        async with stack() as s:
            (await s.http.post("/definitions", json=DEFINITION)).raise_for_status()
            first = await s.http.post(PATH, json=BODY)
            first.raise_for_status()
            sample = first.content
            meter = CpuMeter({"server": s.server.pid, "nats_server": s.nats_pid})
            profiler = None
            if cfg.profile:
                out = results_dir / f"profile-submissions-{connections}.txt"
                profiler = Profiler(s.server.pid, out, cfg.measure_s)
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
            results[str(connections)] = result
    return results, sample


async def phase_ceiling(cfg: Config, sample: bytes, work_dir: Path) -> dict[str, Any]:
    sample_path = work_dir / "sample-response.json"
    sample_path.write_bytes(sample)
    results: dict[str, Any] = {}
    async with ceiling_server(sample_path) as (url, pid):
        for connections in cfg.connections:
            load = round(os.getloadavg()[0], 2)
            result = await run_loadgen(spec(url, connections, cfg, {"X-API-Key": API_KEY}), CpuMeter({"server": pid}))
            result["loadavg_1m_before"] = load
            results[str(connections)] = result
    return results


async def run(quick: bool = False, profile: bool = False, results_dir: Path = Path("bench/results")) -> Outcome:
    cfg = Config.quick() if quick else Config()
    cfg.profile = profile
    out = Outcome("submissions", asdict(cfg))
    gyoza_results, sample = await phase_gyoza(cfg, results_dir)
    await asyncio.to_thread(results_dir.mkdir, parents=True, exist_ok=True)
    ceiling = await phase_ceiling(cfg, sample, results_dir)
    out.results = {"gyoza": gyoza_results, "ceiling": ceiling, "request_body": BODY, "definition": DEFINITION}
    for connections in cfg.connections:
        g, c = gyoza_results[str(connections)], ceiling[str(connections)]
        out.row(
            f"ceiling: bare Quart+Hypercorn, {connections} connections",
            f"{c['ok_per_s']:,.0f}/s, p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms; CPU % of a core: "
            f"server {c['cpu_percent_of_one_core']['server']}, loadgen {c['cpu_percent_of_one_core']['loadgen']}",
        )
        verdict = out.goal(f"submissions/s at {connections}", g["ok_per_s"], GOALS["submissions_per_s"], True)
        out.row(
            f"submissions, {connections} connections",
            f"{g['ok_per_s']:,.0f}/s, p50 {g['p50_ms']} ms, p99 {g['p99_ms']} ms "
            f"(non-2xx {g['requests'] - g['ok']}, errors {sum(g['errors'].values())}, stored: {g['durable_check']})",
            f">= {GOALS['submissions_per_s']:,.0f}/s",
            verdict,
        )
        fraction = g["ok_per_s"] / c["ok_per_s"] if c["ok_per_s"] else 0.0
        verdict = out.goal(f"fraction of ceiling at {connections}", round(fraction, 3), GOALS["fraction_of_ceiling"],
                           True)  # fmt: skip
        cpu = g["cpu_percent_of_one_core"]
        out.row(
            f"submissions / ceiling, {connections} connections",
            f"{fraction:.0%}; CPU % of a core: server {cpu['server']}, nats {cpu['nats_server']}, "
            f"loadgen {cpu['loadgen']}; load {g['loadavg_1m_before']}",
            f">= {GOALS['fraction_of_ceiling']:.0%}",
            verdict,
        )
    return out
