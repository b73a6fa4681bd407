"""Scheduling benchmark, heartbeat phase: 1,000 simulated workers heartbeat at 1 Hz (over NATS, as a worker may)
while GET /runs/{id} latency is measured over HTTP (goal p99 <= 100 ms)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from bench.common import RUN_BODY, bounded_gather, latency_summary, stack
from bench.sim import SimFleet


async def phase_heartbeats(
    workers: int, hz: float, warmup_s: float, measure_s: float, get_concurrency: int
) -> dict[str, Any]:
    interval = 1 / hz
    env = {"GYOZA_HEARTBEAT_INTERVAL": str(interval)}
    async with stack(server_env=env) as s:
        created = await bounded_gather(200, 16, lambda _: s.http.post("/runs", json=RUN_BODY))
        run_ids = [r.json()["id"] for r in created]

        async def get_latencies(seconds: float) -> list[float]:
            samples: list[float] = []
            deadline = time.perf_counter() + seconds

            async def lane() -> None:
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    response = await s.http.get(f"/runs/{random.choice(run_ids)}")
                    samples.append(time.perf_counter() - started)
                    response.raise_for_status()

            await asyncio.gather(*(lane() for _ in range(get_concurrency)))
            return samples

        baseline = await get_latencies(3.0)
        fleet = SimFleet(s.nc, workers, cpu=64, ram_mb=262_144, prefix="hb")
        await fleet.join()
        fleet.start_beating(interval)
        await asyncio.sleep(warmup_s)  # let the first round of worker-record writes settle
        fleet.recording = True
        failures_before = fleet.failures
        loaded = await get_latencies(measure_s)
        fleet.recording = False
        heartbeats = list(fleet.latencies)
        failures = fleet.failures - failures_before
        await fleet.stop()
        listed = (await s.http.get("/workers")).json()["data"]
    return {
        "workers": workers,
        "heartbeat_hz_per_worker": hz,
        "server_heartbeat_interval_s": interval,
        "measure_s": measure_s,
        "get_concurrency": get_concurrency,
        "get_run_idle": latency_summary(baseline),
        "get_run_under_heartbeats": latency_summary(loaded),
        "get_per_s_under_heartbeats": round(len(loaded) / measure_s),
        "heartbeat_reply": latency_summary(heartbeats),
        "heartbeats_per_s": round(len(heartbeats) / measure_s),
        "heartbeat_failures": failures,
        "workers_online_at_end": sum(1 for w in listed if w["status"] == "ONLINE"),
    }
