"""Simulated workers (heartbeats straight over NATS request/reply) and a timestamping assignment listener."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from gyoza.bus import names
from gyoza.schema import HeartbeatIn, WorkerResources

HEARTBEAT_TIMEOUT_S = 5.0


class SimFleet:
    """``count`` workers that only heartbeat (they never run anything and report nothing running)."""

    def __init__(self, nc: Client, count: int, cpu: float, ram_mb: int, prefix: str = "sim") -> None:
        self.nc = nc
        self.ids = [f"{prefix}-{i:05d}" for i in range(count)]
        resources = WorkerResources(cpu=cpu, ram_mb=ram_mb)
        # Pre-serialised: the simulator must stay cheap so that the bench process does not steal the server's CPU.
        self.payloads = {
            wid: HeartbeatIn(resources=resources, version="bench").model_dump_json().encode() for wid in self.ids
        }
        self.latencies: list[float] = []
        self.failures = 0
        self.recording = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    async def beat(self, worker_id: str) -> None:
        started = time.perf_counter()
        try:
            await self.nc.request(
                names.heartbeat_subject(worker_id), self.payloads[worker_id], timeout=HEARTBEAT_TIMEOUT_S
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            self.failures += 1
            return
        if self.recording:
            self.latencies.append(time.perf_counter() - started)

    async def join(self) -> float:
        """Every worker heartbeats at once; returns the perf_counter time the first request went out."""
        started = time.perf_counter()
        await asyncio.gather(*(self.beat(wid) for wid in self.ids))
        return started

    def start_beating(self, interval: float) -> None:
        """Keep every worker heartbeating every ``interval`` seconds, spread evenly over the interval."""
        self._stop.clear()
        self._loop_task = asyncio.create_task(self._beat_forever(interval))

    async def stop(self) -> None:
        self._stop.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _beat_forever(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        step = interval / len(self.ids)
        start = loop.time() + step
        k = 0
        while not self._stop.is_set():
            delay = start + k * step - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.beat(self.ids[k % len(self.ids)]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            k += 1


class AssignmentWatch:
    """Counts ``assign`` messages on ``gyoza.workers.*.assignments`` with arrival times (perf_counter).

    With ``by_run`` it also parses each message so that callers can wait for a given run's assignment.
    """

    def __init__(self, nc: Client, by_run: bool = False) -> None:
        self.nc = nc
        self.by_run = by_run
        self.times: list[float] = []
        self.assigned_at: dict[str, float] = {}
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self._subscription: Any = None

    async def start(self) -> None:
        # Generous pending limits: during placement of 100k runs, the listener must never drop messages.
        self._subscription = await self.nc.subscribe(
            names.assignments_subject("*"), cb=self._on_message, pending_msgs_limit=1_000_000,
            pending_bytes_limit=2 * 1024**3,
        )  # fmt: skip

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        now = time.perf_counter()
        if not self.by_run:
            # A cancel command would start with {"type":"cancel"; the assignment view starts with "assign".
            if msg.data[:20].find(b"assign") >= 0:
                self.times.append(now)
            return
        body = json.loads(msg.data)
        if body.get("type") != "assign":
            return
        self.times.append(now)
        run_id = body["run_id"]
        self.assigned_at[run_id] = now
        waiter = self._waiters.pop(run_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(now)

    async def wait_for(self, run_id: str, limit_s: float) -> float | None:
        """perf_counter time the run's assignment arrived, or None if not within ``limit_s``."""
        if run_id in self.assigned_at:
            return self.assigned_at[run_id]
        waiter = self._waiters.setdefault(run_id, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(waiter, limit_s)
        except TimeoutError:
            return None

    async def wait_count(self, count: int, limit_s: float) -> bool:
        deadline = time.perf_counter() + limit_s
        while len(self.times) < count:
            if time.perf_counter() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True
