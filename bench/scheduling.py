"""The scheduling benchmark (issues 3 and 10).

Phases, each on a fresh NATS + Gyoza server so none inherits another's records:

* ``ceiling``   - what the write path allows at best: raw JetStream KV updates (and get+update CAS cycles) of a
  run-record-sized value from this Python process, and ``RunService.assign`` in-process, with no server running.
* ``placement`` - N runs wait (no worker online), then 200 simulated workers heartbeat at once; the assignment rate
  is measured from the first heartbeat over the first 1,000 (and 5,000) assignments, for each N.
* ``latency``   - 200 idle workers online; POST /runs -> the run's ``assign`` message, one at a time and at a
  modest concurrency.
* ``heartbeats`` - 1,000 workers heartbeating at 1 Hz (spread evenly) while GET /runs/{id} latency is measured.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    RUN_BODY,
    RUN_CPU,
    RUN_RAM_MB,
    CpuMeter,
    Outcome,
    Stack,
    bare_nats,
    bounded_gather,
    create_runs,
    latency_summary,
    ms,
    percentile,
    service_bus,
    stack,
    until,
)
from bench.heartbeats import phase_heartbeats
from bench.profiling import Profiler
from bench.sim import AssignmentWatch, SimFleet
from gyoza.bus import names
from gyoza.schema import AdHocRunIn

DEFAULT_HEARTBEAT_S = 2.0  # the server's default heartbeat interval, which the simulated workers follow


@dataclass
class Config:
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    placement_workers: int = 200
    measure_counts: tuple[int, ...] = (1_000, 5_000)
    create_concurrency: int = 128
    placement_timeout_s: float = 60.0
    latency_sequential: int = 300
    latency_concurrent: int = 600
    latency_concurrency: int = 8
    heartbeat_workers: int = 1_000
    heartbeat_hz: float = 1.0
    heartbeat_warmup_s: float = 3.0
    heartbeat_measure_s: float = 15.0
    get_concurrency: int = 4
    ceiling_ops: int = 10_000
    ceiling_max_s: float = 5.0
    ceiling_assign_runs: int = 3_000
    profile: bool = False
    results_dir: str = "bench/results"

    @classmethod
    def quick(cls) -> Config:
        # The placement sizes stay the (10): only the sample counts shrink.
        return cls(
            latency_sequential=150, latency_concurrent=300, heartbeat_measure_s=8.0, ceiling_ops=5_000,
            ceiling_assign_runs=1_500,
        )  # fmt: skip


GOALS = {
    "placement_rate_per_s": 3_000.0,
    "placement_flatness": 0.9,
    "submit_to_assigned_p99_ms": 25.0,
    "get_run_p99_ms_under_heartbeats": 100.0,
}


# --- helpers ------------------------------------------------------------------------------------------------------


async def server_caught_up(s: Stack, last_run_id: str) -> bool:
    """The scheduler consumed every run request and the server's feed has reached the newest run."""
    info = await s.js.consumer_info(names.RUN_REQUESTS_STREAM, "scheduler")
    if info.num_pending or info.num_ack_pending:
        return False
    listed = (await s.http.get("/runs", params={"limit": 1})).json()["data"]
    return bool(listed) and listed[0]["id"] == last_run_id


# --- phase: ceiling -----------------------------------------------------------------------------------------------


async def phase_ceiling(cfg: Config) -> dict[str, Any]:
    async with bare_nats() as (url, work_dir, _, js), service_bus(url, work_dir) as (_, runs):
        # A real ASSIGNED run record, so the raw writes below move exactly as many bytes as placement does.
        record, _ = await runs.create_adhoc(AdHocRunIn.model_validate(RUN_BODY), None)
        await runs.assign(record.id, 1, "sim-00000", [])
        value, _ = await runs.store.get_raw(record.id)

        kv = await js.create_key_value(bucket="bench_ceiling", history=1)
        lanes = 128
        keys = [f"k{i}" for i in range(lanes * 8)]
        revisions = dict(zip(keys, await asyncio.gather(*(kv.put(k, value) for k in keys)), strict=True))

        async def raw_rate(with_get: bool) -> float:
            done, deadline = 0, time.perf_counter() + cfg.ceiling_max_s

            async def lane(j: int) -> None:
                nonlocal done
                own = keys[j::lanes]
                i = 0
                while done < cfg.ceiling_ops and time.perf_counter() < deadline:
                    key = own[i % len(own)]
                    if with_get:
                        revisions[key] = (await kv.get(key)).revision or 0
                    revisions[key] = await kv.update(key, value, last=revisions[key])
                    done += 1
                    i += 1

            started = time.perf_counter()
            await asyncio.gather(*(lane(j) for j in range(lanes)))
            return done / (time.perf_counter() - started)

        update_rate = await raw_rate(with_get=False)
        cas_rate = await raw_rate(with_get=True)

        # RunService.assign (get, parse, state machine, serialise, CAS write) in this process, 128 in flight
        # like the scheduler: the Python cost of one assignment without a server, its feed or its index.
        rate_in, pending = await create_runs(runs, cfg.ceiling_assign_runs, 128)
        started = time.perf_counter()
        await bounded_gather(len(pending), 128, lambda i: runs.assign(pending[i], 1, f"sim-{i % 200:05d}", []))
        assign_rate = len(pending) / (time.perf_counter() - started)
    return {
        "record_bytes": len(value),
        "kv_update_per_s": round(update_rate),
        "kv_get_update_cas_per_s": round(cas_rate),
        "service_assign_per_s": round(assign_rate),
        "service_create_per_s": round(rate_in),
        "in_flight": 128,
    }


# --- phase: placement ---------------------------------------------------------------------------------------------


async def phase_placement(cfg: Config, n: int, results_dir: Path, profile: bool) -> dict[str, Any]:
    per_worker = math.ceil(n / cfg.placement_workers) + 1
    async with stack() as s, service_bus(s.nats_url, s.work_dir) as (_, runs):
        create_rate, ids = await create_runs(runs, n, cfg.create_concurrency)
        last_id = ids[-1]
        ingest_started = time.perf_counter()
        if not await until(lambda: server_caught_up(s, last_id), limit_s=max(60.0, n / 500), every=0.25):
            raise TimeoutError(f"server did not ingest {n} runs in time")
        ingest_s = time.perf_counter() - ingest_started

        watch = AssignmentWatch(s.nc)
        await watch.start()
        premature = len(watch.times)
        fleet = SimFleet(s.nc, cfg.placement_workers, cpu=per_worker * RUN_CPU, ram_mb=per_worker * RUN_RAM_MB)
        target = max(k for k in (*cfg.measure_counts, min(n, min(cfg.measure_counts))) if k <= n)
        profiler = Profiler(s.server.pid, results_dir / f"profile-placement-{n}.txt", 8.0) if profile else None
        if profiler is not None:
            await profiler.start()
        cpu = CpuMeter({"server": s.server.pid, "nats_server": s.nats_pid, "bench": os.getpid()})
        cpu.start()
        first_heartbeat = time.perf_counter()
        await fleet.join()
        joined_s = time.perf_counter() - first_heartbeat
        fleet.start_beating(DEFAULT_HEARTBEAT_S)
        complete = await watch.wait_count(target, cfg.placement_timeout_s)
        cpu_percent = cpu.stop()
        profile_summary = await profiler.finish() if profiler is not None else None
        await fleet.stop()
        await watch.stop()

    times = watch.times
    result: dict[str, Any] = {
        "pending_runs": n,
        "workers": cfg.placement_workers,
        "worker_cpu": per_worker * RUN_CPU,
        "create_per_s": round(create_rate),
        "ingest_wait_s": round(ingest_s, 2),
        "assigned_before_workers": premature,
        "all_workers_joined_s": round(joined_s, 3),
        "first_assignment_ms": ms(times[0] - first_heartbeat) if times else None,
        "measured_count": target,
        "complete": complete,
        "heartbeat_failures": fleet.failures,
        "cpu_percent_of_one_core": cpu_percent,
    }
    for k in cfg.measure_counts:
        if k <= n and len(times) >= k:
            result[f"rate_first_{k}_per_s"] = round(k / (times[k - 1] - first_heartbeat))
            result[f"steady_rate_first_{k}_per_s"] = round((k - 1) / (times[k - 1] - times[0]))
    if profile_summary is not None:
        result["profile"] = profile_summary
    return result


# --- phase: latency -----------------------------------------------------------------------------------------------


async def phase_latency(cfg: Config) -> dict[str, Any]:
    async with stack() as s:
        fleet = SimFleet(s.nc, cfg.placement_workers, cpu=100_000, ram_mb=1 << 30)
        await fleet.join()
        fleet.start_beating(DEFAULT_HEARTBEAT_S)
        watch = AssignmentWatch(s.nc, by_run=True)
        await watch.start()
        posts: list[float] = []
        lost = 0

        async def one() -> float | None:
            nonlocal lost
            started = time.perf_counter()
            response = await s.http.post("/runs", json=RUN_BODY)
            posts.append(time.perf_counter() - started)
            response.raise_for_status()
            assigned = await watch.wait_for(response.json()["id"], limit_s=5.0)
            if assigned is None:
                lost += 1
                return None
            return assigned - started

        for _ in range(20):  # warm-up: connections, caches
            await one()
        posts.clear()
        sequential = [x for x in [await one() for _ in range(cfg.latency_sequential)] if x is not None]
        sequential_posts = list(posts)
        posts.clear()
        cpu = CpuMeter({"server": s.server.pid, "nats_server": s.nats_pid, "bench": os.getpid()})
        cpu.start()
        concurrent_started = time.perf_counter()
        concurrent = await bounded_gather(cfg.latency_concurrent, cfg.latency_concurrency, lambda _: one())
        concurrent_s = time.perf_counter() - concurrent_started
        cpu_percent = cpu.stop()
        await fleet.stop()
        await watch.stop()
    return {
        "workers": cfg.placement_workers,
        "sequential": {**latency_summary(sequential), "post_p50_ms": ms(percentile(sequential_posts, 50))},
        "concurrent": {
            **latency_summary([x for x in concurrent if x is not None]),
            "concurrency": cfg.latency_concurrency,
            "post_p50_ms": ms(percentile(posts, 50)),
            "runs_per_s": round(cfg.latency_concurrent / concurrent_s),
            "cpu_percent_of_one_core": cpu_percent,
        },
        "not_assigned_within_5s": lost,
    }


# --- the benchmark ------------------------------------------------------------------------------------------------


async def run(quick: bool = False, profile: bool = False, results_dir: Path = Path("bench/results")) -> Outcome:
    cfg = Config.quick() if quick else Config()
    cfg.profile = profile
    cfg.results_dir = str(results_dir)
    out = Outcome("scheduling", asdict(cfg))
    phase_s: dict[str, float] = {}

    started = time.perf_counter()
    ceiling = await phase_ceiling(cfg)
    phase_s["ceiling"] = time.perf_counter() - started
    out.results["ceiling"] = ceiling
    out.row("ceiling: raw KV update (128 in flight)", f"{ceiling['kv_update_per_s']:,}/s")
    out.row("ceiling: raw KV get+update CAS", f"{ceiling['kv_get_update_cas_per_s']:,}/s")
    out.row("ceiling: RunService.assign in-process", f"{ceiling['service_assign_per_s']:,}/s")

    placements = []
    for n in cfg.sizes:
        started = time.perf_counter()
        load = os.getloadavg()[0]
        result = await phase_placement(cfg, n, results_dir, profile)
        result["loadavg_1m_before"] = round(load, 2)
        phase_s[f"placement_{n}"] = time.perf_counter() - started
        placements.append(result)
        for k in cfg.measure_counts:
            rate = result.get(f"rate_first_{k}_per_s")
            if rate is None:
                continue
            verdict = out.goal(f"placement {n:,} pending, first {k:,}", rate, GOALS["placement_rate_per_s"], True)
            out.row(
                f"placement: {n:,} pending, first {k:,} assigned",
                f"{rate:,}/s (steady {result[f'steady_rate_first_{k}_per_s']:,}/s)",
                f">= {GOALS['placement_rate_per_s']:,.0f}/s",
                verdict,
            )
        cpu = result["cpu_percent_of_one_core"]
        out.row(
            f"placement: {n:,} pending, context",
            f"first assignment {result['first_assignment_ms']} ms after the first heartbeat; CPU % of a core: "
            f"server {cpu['server']}, nats {cpu['nats_server']}, bench {cpu['bench']}; "
            f"load {result['loadavg_1m_before']}",
        )
        if not result["complete"]:
            out.row(f"placement: {n:,} pending", f"only {result['measured_count']} target not reached", "", "MISSED")
    out.results["placement"] = placements
    rates = [p["rate_first_1000_per_s"] for p in placements if "rate_first_1000_per_s" in p]
    if rates:
        flatness = round(min(rates) / max(rates), 2)
        out.results["placement_flatness"] = flatness
        verdict = out.goal("placement flatness", flatness, GOALS["placement_flatness"], True)
        out.row(
            "placement: flatness (slowest / fastest first-1,000 rate)", f"{flatness:.2f}",
            f">= {GOALS['placement_flatness']:g}", verdict,
        )  # fmt: skip

    started = time.perf_counter()
    load = os.getloadavg()[0]
    latency = await phase_latency(cfg)
    latency["loadavg_1m_before"] = round(load, 2)
    phase_s["latency"] = time.perf_counter() - started
    out.results["latency"] = latency
    for mode in ("sequential", "concurrent"):
        summary = latency[mode]
        label = "one at a time" if mode == "sequential" else f"{cfg.latency_concurrency} in flight"
        verdict = out.goal(
            f"submit->ASSIGNED p99 ({label})", summary["p99_ms"], GOALS["submit_to_assigned_p99_ms"], False
        )
        out.row(
            f"submit -> ASSIGNED, {label}",
            f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms (n={summary['count']})",
            f"p99 <= {GOALS['submit_to_assigned_p99_ms']:g} ms",
            verdict,
        )

    started = time.perf_counter()
    load = os.getloadavg()[0]
    heartbeats = await phase_heartbeats(
        cfg.heartbeat_workers, cfg.heartbeat_hz, cfg.heartbeat_warmup_s, cfg.heartbeat_measure_s, cfg.get_concurrency
    )
    heartbeats["loadavg_1m_before"] = round(load, 2)
    phase_s["heartbeats"] = time.perf_counter() - started
    out.results["heartbeats"] = heartbeats
    loaded = heartbeats["get_run_under_heartbeats"]
    verdict = out.goal(
        "GET /runs/{id} p99 under heartbeats", loaded["p99_ms"], GOALS["get_run_p99_ms_under_heartbeats"], False
    )
    out.row(
        f"GET /runs/{{id}} with {cfg.heartbeat_workers:,} workers at {cfg.heartbeat_hz:g} Hz",
        f"p50 {loaded['p50_ms']} ms, p99 {loaded['p99_ms']} ms (idle p99 {heartbeats['get_run_idle']['p99_ms']} ms)",
        f"p99 <= {GOALS['get_run_p99_ms_under_heartbeats']:g} ms",
        verdict,
    )
    reply = heartbeats["heartbeat_reply"]
    out.row(
        "heartbeat reply (NATS request/reply)",
        f"p50 {reply['p50_ms']} ms, p99 {reply['p99_ms']} ms, {heartbeats['heartbeats_per_s']}/s, "
        f"{heartbeats['heartbeat_failures']} failed, {heartbeats['workers_online_at_end']} online",
    )
    out.results["phase_seconds"] = {k: round(v, 1) for k, v in phase_s.items()}
    return out
