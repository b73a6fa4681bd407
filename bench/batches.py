"""The batch submissions benchmark (issue 10.4): durable runs per second through ``POST .../runs/batch``.

Closed loop: 1, 4 and 16 lanes, each sending batches of 500 runs of a definition (a small JSON body per run) one
after another until the level's runs (24,000; 8,000 with --quick) are in, on a fresh stack per level. Every 201
means all 500 run records are in JetStream; the bench checks afterwards that the runs bucket holds at least as many
runs as the 201s promised. The request bodies are encoded once and the answers are read but not parsed, so the
bench's own CPU stays small.

Ceiling, in the same run: the same number of lanes writing 500 run-sized records at a time straight into a bare
JetStream KV bucket (``asyncio.gather`` over ``kv.create``, nats-py in this process): what the store and the client
library allow before any HTTP, validation or scheduling.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from nats.js.api import KeyValueConfig

from bench.common import CpuMeter, Outcome, bare_nats, bench_definition, default_workers, stack
from bench.profiling import Profiler
from tests.processes import child_pids

DEFINITION = bench_definition("bench-batch")
BATCH_SIZE = 500
PATH = f"/definitions/{DEFINITION['name']}/runs/batch"
ITEM = {"inputs": {"text": "hello from the batch benchmark", "count": 3}, "priority": 5}

GOAL_RUNS_PER_S = 10_000.0


@dataclass
class Config:
    lanes: tuple[int, ...] = (1, 4, 16)
    batch_size: int = BATCH_SIZE
    # Runs per level, split evenly over the lanes (at least one batch each), after one warm-up batch.
    runs_per_level: int = 24_000
    profile: bool = False
    # Server processes: what ``gyoza server start`` runs here by default.
    workers: int = field(default_factory=default_workers)
    # py-spy samples the server this long from the start of each level's measured window.
    profile_s: float = 2.0

    @classmethod
    def quick(cls) -> Config:
        return cls(runs_per_level=8_000)


def body(size: int) -> bytes:
    return json.dumps({"runs": [ITEM] * size}).encode()


async def closed_loop(lanes: int, cfg: Config, send: Any) -> dict[str, Any]:
    """``lanes`` loops, each calling ``send()`` (True: a durable batch) back to back for its share of the runs;
    runs/s is the runs acknowledged over the wall time from the first send to the last answer."""
    per_lane = max(1, cfg.runs_per_level // (cfg.batch_size * lanes))
    await send()  # warm-up: connections open, code paths hot
    ok, failed, latencies = 0, 0, []

    async def lane() -> None:
        nonlocal ok, failed
        for _ in range(per_lane):
            began = time.perf_counter()
            good = await send()
            latencies.append(time.perf_counter() - began)
            ok, failed = ok + good, failed + (not good)

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(lanes)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "batches_ok": ok, "batches_failed": failed, "elapsed_s": round(elapsed, 2),
        "runs_per_s": round(ok * cfg.batch_size / elapsed, 1),
        "batch_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1), "batch_max_ms": round(latencies[-1] * 1000, 1),
    }  # fmt: skip


async def phase_gyoza(cfg: Config, results_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    payload = body(cfg.batch_size)
    headers = {"Content-Type": "application/json"}
    for lanes in cfg.lanes:
        async with stack(http_connections=max(lanes, 4), workers=cfg.workers) as s:
            (await s.http.post("/definitions", json=DEFINITION)).raise_for_status()
            server_pids = [s.server.pid, *child_pids(s.server.pid)]  # the pool's parent and its server processes
            statuses: dict[int, int] = {}

            async def send(counted: dict[int, int] = statuses) -> bool:
                response = await s.http.post(PATH, content=payload, headers=headers)
                counted[response.status_code] = counted.get(response.status_code, 0) + 1
                return response.status_code == 201

            meter = CpuMeter({"server": server_pids, "nats_server": s.nats_pid})
            load = round(os.getloadavg()[0], 2)
            profiler = Profiler(server_pids[-1], results_dir / f"profile-batches-{lanes}.txt", cfg.profile_s)
            meter.start()
            if cfg.profile:
                await profiler.start()
            result = await closed_loop(lanes, cfg, send)
            result["cpu_percent_of_one_core"] = meter.stop()
            if cfg.profile:
                result["profile"] = await profiler.finish()
            stored = (await s.js.stream_info("KV_gyoza_runs")).state.messages
            promised = statuses.get(201, 0) * cfg.batch_size  # the warm-up batch included
            result.update(statuses={str(k): v for k, v in statuses.items()}, runs_stored_after=stored)
            result["durable_check"] = "ok" if stored >= promised else "FEWER STORED"
            result["loadavg_1m_before"] = load
            results[str(lanes)] = result
    return results


async def phase_ceiling(cfg: Config, record: bytes) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for lanes in cfg.lanes:
        async with bare_nats() as (_, _, _, js):
            kv = await js.create_key_value(KeyValueConfig(bucket="bench_ceiling", history=1))

            async def send(store: Any = kv) -> bool:
                keys = [str(uuid.uuid4()) for _ in range(cfg.batch_size)]
                await asyncio.gather(*(store.create(key, record) for key in keys))
                return True

            result = await closed_loop(lanes, cfg, send)
            results[str(lanes)] = result
    return results


async def run(quick: bool = False, profile: bool = False, results_dir: Path = Path("bench/results")) -> Outcome:
    cfg = replace(Config.quick() if quick else Config(), profile=profile)
    out = Outcome("batches", asdict(cfg))
    gyoza_results = await phase_gyoza(cfg, results_dir)
    # A run record of the size the server stores for these runs (the API view is about the same size).
    record = json.dumps({"id": str(uuid.uuid4()), "pad": "x" * 1400}).encode()
    ceiling = await phase_ceiling(cfg, record)
    out.results = {"gyoza": gyoza_results, "ceiling": ceiling, "item": ITEM, "definition": DEFINITION}
    for lanes in cfg.lanes:
        g, c = gyoza_results[str(lanes)], ceiling[str(lanes)]
        out.row(
            f"ceiling: bare KV creates, {cfg.batch_size} pipelined, {lanes} lanes",
            f"{c['runs_per_s']:,.0f} records/s, batch p50 {c['batch_p50_ms']} ms",
        )
        verdict = out.goal(f"batch runs/s at {lanes} concurrent", g["runs_per_s"], GOAL_RUNS_PER_S, True)
        cpu = g["cpu_percent_of_one_core"]
        fraction = g["runs_per_s"] / c["runs_per_s"] if c["runs_per_s"] else 0.0
        out.row(
            f"batch submissions, {lanes} concurrent batches of {cfg.batch_size}, {cfg.workers} server processes",
            f"{g['runs_per_s']:,.0f} runs/s ({fraction:.0%} of ceiling), batch p50 {g['batch_p50_ms']} ms, max "
            f"{g['batch_max_ms']} ms; statuses {g['statuses']}; stored: {g['durable_check']}; CPU % of a core: "
            f"server {cpu['server']}, nats {cpu['nats_server']}; load {g['loadavg_1m_before']}",
            f">= {GOAL_RUNS_PER_S:,.0f}/s",
            verdict,
        )
    return out
