"""Worker liveness (SPEC §5.4-5.5): heartbeats register and refresh workers, reconcile what they hold, and the
silence of a worker past the timeout evicts it.

Heartbeats are the only liveness signal (never a consumer's ack wait). On eviction, ASSIGNED attempts go back to
the queue and RUNNING ones fail with WORKER_LOST, which the retry policy turns into a new attempt elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from gyoza.errors import GyozaError
from gyoza.scheduler.state import ClusterState
from gyoza.schema import (
    FailureReason,
    HeartbeatIn,
    HeartbeatReply,
    RunRecord,
    RunState,
    WorkerCommand,
    WorkerRecord,
    WorkerStatus,
)
from gyoza.services.runs import RunService
from gyoza.services.workers import WorkerService

log = logging.getLogger(__name__)

# A RUNNING attempt must be missing from this many consecutive reports of its worker before it counts as lost (one
# miss is normal: the worker may have claimed and started it after it built that report).
MISSING_REPORTS_TO_LOSE = 2


class Liveness:
    def __init__(
        self,
        state: ClusterState,
        runs: RunService,
        workers: WorkerService,
        heartbeat_interval: float,
        worker_timeout: float,
        on_change: Callable[[], None],
    ) -> None:
        self.state = state
        self.runs = runs
        self.workers = workers
        self.heartbeat_interval = heartbeat_interval
        self.worker_timeout = worker_timeout
        self.on_change = on_change
        self.records: dict[str, WorkerRecord] = {}
        self.last_seen: dict[str, float] = {}
        self._last_written: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def take_over(self) -> None:
        """On gaining leadership: load the fleet and give every live worker a full timeout of grace. Attempts held
        on workers that are offline (or were never registered) are recovered at once: a previous leader may have
        died between marking a worker offline and re-queuing its runs."""
        now = time.monotonic()
        self.records = {record.id: record for record in await self.workers.all()}
        self.last_seen = {}
        for record in self.records.values():
            alive = record.status != WorkerStatus.OFFLINE
            if alive:
                self.last_seen[record.id] = now
            self.state.ledger.upsert_worker(record, alive=alive)
        for worker_id in list(self.state.ledger.by_worker):
            if worker_id not in self.last_seen and self.state.ledger.on_worker(worker_id):
                await self.evict(worker_id, f"worker {worker_id} was offline when this scheduler took over")
        self.on_change()

    async def reload(self, worker_id: str) -> None:
        """Re-read one worker record (after a drain written by another replica)."""
        record = next((r for r in await self.workers.all() if r.id == worker_id), None)
        if record is not None:
            self.records[worker_id] = record
            alive = worker_id in self.last_seen and record.status != WorkerStatus.OFFLINE
            if self.state.ledger.upsert_worker(record, alive=alive):
                self.on_change()

    async def heartbeat(self, worker_id: str, body: HeartbeatIn) -> HeartbeatReply:
        now = time.monotonic()
        self.last_seen[worker_id] = now
        record = self.records.get(worker_id)
        if self._needs_write(record, body, now):
            record = await self.workers.record_heartbeat(worker_id, body)
            self.records[worker_id] = record
            self._last_written[worker_id] = now
        assert record is not None
        if self.state.ledger.upsert_worker(record, alive=True):
            self.on_change()
        return HeartbeatReply(commands=self._reconcile(worker_id, body), heartbeat_interval_s=self.heartbeat_interval)

    def _needs_write(self, record: WorkerRecord | None, body: HeartbeatIn, now: float) -> bool:
        """Write the worker record on any change, and otherwise often enough that GET /workers stays fresh."""
        if record is None or record.status == WorkerStatus.OFFLINE:
            return True
        if record.resources != body.resources or record.tags != body.tags or record.version != body.version:
            return True
        return now - self._last_written.get(record.id, 0.0) >= 2 * self.heartbeat_interval

    def _reconcile(self, worker_id: str, body: HeartbeatIn) -> list[WorkerCommand]:
        """Cancel what the worker holds but should not; count what it should hold but does not report."""
        reported = {(held.run_id, held.attempt) for held in body.running}
        commands = []
        for run_id, attempt in sorted(reported):
            held = self.state.ledger.held.get(run_id)
            current_here = held is not None and held.attempt == attempt and held.worker_id == worker_id
            if not current_here or (held is not None and held.cancel_requested):
                commands.append(WorkerCommand(type="cancel", run_id=run_id, attempt=attempt))
        for held in self.state.ledger.on_worker(worker_id):
            if (held.run_id, held.attempt) in reported:
                held.missing_reports = 0
                continue
            if held.state != RunState.RUNNING:
                continue  # an unclaimed assignment is not lost: the next claim redelivers it
            held.missing_reports += 1
            if held.missing_reports == MISSING_REPORTS_TO_LOSE:
                message = f"worker {worker_id} no longer runs attempt {held.attempt} (it restarted?)"
                self._spawn(self._lose(held.run_id, held.attempt, message))
        return commands

    async def check(self) -> None:
        """Evict every worker silent for longer than the timeout."""
        now = time.monotonic()
        for worker_id, seen in list(self.last_seen.items()):
            if now - seen > self.worker_timeout:
                del self.last_seen[worker_id]
                await self.evict(worker_id, f"worker {worker_id} sent no heartbeat for {now - seen:.1f} s")

    async def evict(self, worker_id: str, message: str) -> None:
        log.warning("evicting: %s", message)
        self.state.ledger.set_schedulable(worker_id, False)
        record = self.records.get(worker_id)
        if record is not None and record.status != WorkerStatus.OFFLINE:
            self.records[worker_id] = await self.workers.set_status(worker_id, WorkerStatus.OFFLINE)
        for held in self.state.ledger.on_worker(worker_id):
            if held.state == RunState.ASSIGNED:
                await self._apply(self.runs.unassign(held.run_id, held.attempt, message))
            else:
                await self._lose(held.run_id, held.attempt, message)
        self.on_change()

    async def _lose(self, run_id: str, attempt: int, message: str) -> None:
        await self._apply(self.runs.fail_attempt(run_id, attempt, FailureReason.WORKER_LOST, message))

    async def _apply(self, write: Awaitable[RunRecord]) -> None:
        try:
            await write
        except GyozaError as exc:
            log.info("worker-loss write skipped: %s", exc.message)
        self.on_change()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
