"""The lifecycle benchmark (issue 6): whole runs per second, submit -> ASSIGNED -> RUNNING -> COMPLETED.

Simulated workers act as ``gyoza worker start --mode nats`` does: they heartbeat over NATS, take their assignments
from ``gyoza.workers.<id>.assignments`` and report each run's events as NATS requests on
``gyoza.workers.<id>.events`` (STARTED, then COMPLETED at once). The server runs as many processes as it does by
default here. ``lanes`` closed loops each submit a run (``POST /runs``) and wait until their run's COMPLETED was
acknowledged before submitting the next, so the rate is of finished lifecycles, not of a growing backlog.
HTTP goes through ``bench.rawhttp`` (cheap on CPU: the bench shares the machine with the server).

Ceiling, in the same run: the same four writes through the services in this process (``RunService.create_adhoc``,
``assign``, ``apply_worker_event`` x2) on a bare nats-server, with as many lanes: what the records allow with no
HTTP, no run feed, no index and no scheduler around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.common import (
    API_KEY,
    RUN_BODY,
    CpuMeter,
    Outcome,
    bare_nats,
    default_workers,
    latency_summary,
    service_bus,
    stack,
)
from bench.profiling import Profiler
from bench.rawhttp import Pool, build_request
from bench.sim import SimFleet
from gyoza.bus import names
from gyoza.bus.messaging import ERROR_HEADER
from gyoza.schema import AdHocRunIn, WorkerEventIn, WorkerEventReport
from tests.processes import child_pids

GOALS = {"lifecycles_per_s": 1_000.0}
HEARTBEAT_S = 2.0


@dataclass
class Config:
    lanes: int = 64
    workers: int = 8
    warmup_s: float = 3.0
    measure_s: float = 10.0
    ceiling_runs: int = 3_000
    profile: bool = False

    @classmethod
    def quick(cls) -> Config:
        return cls(warmup_s=2.0, measure_s=5.0, ceiling_runs=1_500)


class Lifecycles:
    """Submitters and instant-completing workers sharing one HTTP pool."""

    def __init__(self, url: str, pool: Pool, nc: Client) -> None:
        self.url = url
        self.pool = pool
        self.nc = nc
        self.headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
        self.submit = build_request("POST", url, "/runs", self.headers, json.dumps(RUN_BODY).encode())
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.early: set[str] = set()  # completed before the submitter registered its wait (tiny window)
        self.phases: dict[str, list[float]] = {"submit_http": [], "submit_to_assign": [], "started": [],
                                               "completed": []}  # fmt: skip
        self.assigned_at: dict[str, float] = {}
        self.errors: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_assignment(self, msg: Msg) -> None:
        body = json.loads(msg.data)
        if body.get("type") != "assign":
            return
        task = asyncio.create_task(self.complete(body["run_id"], body["attempt"], msg.subject.split(".")[2]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def event(self, run_id: str, attempt: int, worker_id: str, type_: str, payload: dict[str, Any]) -> None:
        event = WorkerEventReport(run_id=run_id, attempt=attempt, worker_id=worker_id, type=type_, payload=payload)  # type: ignore[arg-type]
        reply = await self.nc.request(names.events_subject(worker_id), event.model_dump_json().encode(), timeout=10)
        if reply.headers and ERROR_HEADER in reply.headers:
            raise RuntimeError(f"{type_} for {run_id}: {reply.headers[ERROR_HEADER]} {reply.data[:300]!r}")

    async def complete(self, run_id: str, attempt: int, worker_id: str) -> None:
        assigned = time.perf_counter()
        self.assigned_at[run_id] = assigned  # the submitter turns it into submit -> assigned once it has the id
        try:
            await self.event(run_id, attempt, worker_id, "STARTED", {})
            started = time.perf_counter()
            self.phases["started"].append(started - assigned)
            await self.event(run_id, attempt, worker_id, "COMPLETED", {"exit_code": 0, "outputs": {}})
            self.phases["completed"].append(time.perf_counter() - started)
        except Exception as exc:  # report, never hang the lane
            self.errors.append(str(exc))
        waiter = self.waiting.pop(run_id, None)
        if waiter is None:
            self.early.add(run_id)
        elif not waiter.done():
            waiter.set_result(None)

    async def lane(self, deadline: float, done: list[float]) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status, data = await self.pool.send(self.submit)
            if status != 201:
                self.errors.append(f"submit: {status} {data[:300]!r}")
                await asyncio.sleep(0.05)
                continue
            run_id = json.loads(data)["id"]
            self.phases["submit_http"].append(time.perf_counter() - started)
            if run_id not in self.early:
                waiter = self.waiting.setdefault(run_id, asyncio.get_running_loop().create_future())
                try:
                    await asyncio.wait_for(waiter, 30)
                except TimeoutError:
                    self.errors.append(f"run {run_id} not completed within 30 s")
                    continue
            self.early.discard(run_id)
            done.append(time.perf_counter())
            assigned = self.assigned_at.pop(run_id, None)
            if assigned is not None:
                self.phases["submit_to_assign"].append(assigned - started)


async def phase_gyoza(cfg: Config, results_dir: Path) -> dict[str, Any]:
    async with stack(workers=default_workers()) as s:
        server_pids = [s.server.pid, *child_pids(s.server.pid)]  # the pool's parent and its server processes
        fleet = SimFleet(s.nc, cfg.workers, cpu=100_000, ram_mb=1 << 30)
        await fleet.join()
        fleet.start_beating(HEARTBEAT_S)
        pool = Pool(s.server.url, cfg.lanes * 2)
        sim = Lifecycles(s.server.url, pool, s.nc)
        subscription = await s.nc.subscribe(names.assignments_subject("*"), cb=sim.on_assignment,
                                            pending_msgs_limit=1_000_000)  # fmt: skip
        load = round(os.getloadavg()[0], 2)
        meter = CpuMeter({"server": server_pids, "nats_server": s.nats_pid, "bench": os.getpid()})
        profile_path = results_dir / "profile-lifecycle.txt"
        profiler = Profiler(server_pids[-1], profile_path, cfg.measure_s) if cfg.profile else None
        done: list[float] = []
        started = time.perf_counter()
        window_start = started + cfg.warmup_s
        window_end = window_start + cfg.measure_s

        async def meter_window() -> dict[str, float]:
            await asyncio.sleep(cfg.warmup_s)
            meter.start()
            if profiler is not None:
                await profiler.start()
            await asyncio.sleep(cfg.measure_s)
            return meter.stop()

        meter_task = asyncio.create_task(meter_window())
        await asyncio.gather(*(sim.lane(window_end, done) for _ in range(cfg.lanes)))
        cpu = await meter_task
        profile = await profiler.finish() if profiler is not None else None
        await subscription.unsubscribe()
        await fleet.stop()
        pool.close()
    in_window = [t for t in done if window_start <= t <= window_end]
    result: dict[str, Any] = {
        "lanes": cfg.lanes,
        "workers": cfg.workers,
        "completed_in_window": len(in_window),
        "lifecycles_per_s": round(len(in_window) / cfg.measure_s, 1),
        "errors": len(sim.errors),
        "first_errors": sim.errors[:5],
        "phases": {name: latency_summary(values) for name, values in sim.phases.items()},
        "cpu_percent_of_one_core": cpu,
        "loadavg_1m_before": load,
        "heartbeat_failures": fleet.failures,
    }
    if profile is not None:
        result["profile"] = profile
    return result


async def phase_ceiling(cfg: Config) -> dict[str, Any]:
    async with bare_nats() as (url, work_dir, _, _), service_bus(url, work_dir) as (_, runs):
        body = AdHocRunIn.model_validate(RUN_BODY)
        remaining = cfg.ceiling_runs

        async def lane(j: int) -> None:
            nonlocal remaining
            worker = f"sim-{j % cfg.workers:05d}"
            while remaining > 0:
                remaining -= 1
                record, _ = await runs.create_adhoc(body, None)
                await runs.assign(record.id, 1, worker, [])
                for type_, payload in (("STARTED", {}), ("COMPLETED", {"exit_code": 0, "outputs": {}})):
                    event = WorkerEventIn(attempt=1, worker_id=worker, type=type_, payload=payload)  # type: ignore[arg-type]
                    await runs.apply_worker_event(record.id, event)

        started = time.perf_counter()
        await asyncio.gather(*(lane(j) for j in range(cfg.lanes)))
        return {"runs": cfg.ceiling_runs, "lifecycles_per_s": round(cfg.ceiling_runs / (time.perf_counter() - started))}


async def run(quick: bool = False, profile: bool = False, results_dir: Path = Path("bench/results")) -> Outcome:
    cfg = Config.quick() if quick else Config()
    cfg.profile = profile
    out = Outcome("lifecycle", asdict(cfg))
    ceiling = await phase_ceiling(cfg)
    result = await phase_gyoza(cfg, results_dir)
    out.results = {"ceiling": ceiling, "gyoza": result}
    out.row("ceiling: services in-process (create, assign, STARTED, COMPLETED)", f"{ceiling['lifecycles_per_s']:,}/s")
    verdict = out.goal("lifecycles/s", result["lifecycles_per_s"], GOALS["lifecycles_per_s"], True)
    cpu = result["cpu_percent_of_one_core"]
    out.row(
        f"lifecycles, {cfg.lanes} lanes, {cfg.workers} NATS-mode workers, {default_workers()} server processes",
        f"{result['lifecycles_per_s']:,.0f}/s ({result['lifecycles_per_s'] / ceiling['lifecycles_per_s']:.0%} of the "
        f"ceiling; errors {result['errors']}); CPU % of a core: server {cpu['server']}, nats {cpu['nats_server']}, "
        f"bench {cpu['bench']}; load {result['loadavg_1m_before']}",
        f">= {GOALS['lifecycles_per_s']:,.0f}/s",
        verdict,
    )
    phases = result["phases"]
    out.row(
        "lifecycle phases p50 / p99 (ms)",
        "; ".join(f"{name} {p['p50_ms']} / {p['p99_ms']}" for name, p in phases.items()),
    )
    with contextlib.suppress(KeyError):
        out.results["gyoza"]["ceiling_fraction"] = round(result["lifecycles_per_s"] / ceiling["lifecycles_per_s"], 3)
    return out
