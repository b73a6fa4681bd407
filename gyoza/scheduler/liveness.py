"""Worker liveness (SPEC §5.4-5.5): heartbeats register and refresh workers, reconcile what they hold, and the
silence of a worker past the timeout evicts it.

Heartbeats are the only liveness signal (never a consumer's ack wait). On eviction, ASSIGNED attempts go back to
the queue and RUNNING ones fail with WORKER_LOST, which the retry policy turns into a new attempt elsewhere.

A heartbeat is cheap when nothing changed: no KV write (the record's ``last_heartbeat`` is refreshed only about once
per worker timeout), no ledger update. Silence is measured from each heartbeat's arrival, minus the time the leader's
own loop was stalled (``Stalls``), so a leader that falls behind does not evict the workers it has not heard yet.
Every write first checks ``acting``: only a leader whose lease is fresh evicts or writes worker records.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable

from gyoza.errors import GyozaError
from gyoza.scheduler.stalls import Stalls
from gyoza.scheduler.state import ClusterState
from gyoza.schema import (
    FailureReason,
    HeartbeatIn,
    RunRecord,
    RunState,
    WorkerCommand,
    WorkerRecord,
    WorkerStatus,
)
from gyoza.services.clock import SYSTEM_CLOCK, Clock
from gyoza.services.runs import RunService
from gyoza.services.workers import WorkerService
from gyoza.supervision import Background, TaskFailures

log = logging.getLogger(__name__)

# A RUNNING attempt must be missing from this many consecutive reports of its worker before it counts as lost (one
# miss is normal: the worker may have claimed and started it after it built that report).
MISSING_REPORTS_TO_LOSE = 2
CHECK_EVERY_S = 0.2
# An unchanged worker's record is rewritten (``last_heartbeat``) after this share of the worker timeout, jittered
# down to REFRESH_JITTER of it, so that a fleet that joined at once does not refresh in one burst.
REFRESH_SHARE, REFRESH_JITTER = 1.0, 0.75
# Waking later than this counts as a stall (below it, timer jitter).
STALL_MIN_S = 0.01


class Liveness:
    def __init__(
        self,
        state: ClusterState,
        runs: RunService,
        workers: WorkerService,
        heartbeat_interval: float,
        worker_timeout: float,
        on_change: Callable[[], None],
        acting: Callable[[], bool],
        failures: TaskFailures,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.clock = clock
        self.state = state
        self.runs = runs
        self.workers = workers
        self.heartbeat_interval = heartbeat_interval
        self.worker_timeout = worker_timeout
        self.on_change = on_change
        self.acting = acting
        self.records: dict[str, WorkerRecord] = {}
        self.last_seen: dict[str, float] = {}  # monotonic arrival of each live worker's last heartbeat
        self.stalls = Stalls(keep_s=10 * worker_timeout)
        self._reported: dict[str, HeartbeatIn] = {}  # the body each record was last compared with
        self._refresh_at: dict[str, float] = {}
        self._background = Background("scheduler-worker-loss", failures)

    async def take_over(self) -> None:
        """On gaining leadership: load the fleet and give every live worker a full timeout of grace. Attempts held
        on workers that are offline (or were never registered) are recovered at once: a previous leader may have
        died between marking a worker offline and re-queuing its runs."""
        now = self.clock.monotonic()
        self.stalls.clear()
        self._reported, self._refresh_at = {}, {}
        self.records = {record.id: record for record in await self.workers.all()}
        self.last_seen = {}
        for record in self.records.values():
            alive = record.status != WorkerStatus.OFFLINE
            if alive:
                self.last_seen[record.id] = now
                self._refresh_at[record.id] = self._next_refresh(now)
            self.state.ledger.upsert_worker(record, alive=alive)
        for worker_id in list(self.state.ledger.by_worker):
            if worker_id not in self.last_seen and self.state.ledger.on_worker(worker_id):
                await self.evict(worker_id, f"worker {worker_id} was offline when this scheduler took over")
        self.on_change()

    async def reload(self, worker_id: str) -> None:
        """Re-read one worker record (after a drain written by another replica)."""
        record = await self.workers.get(worker_id)
        if record is not None:
            self.records[worker_id] = record
            self._reported.pop(worker_id, None)
            alive = worker_id in self.last_seen and record.status != WorkerStatus.OFFLINE
            if self.state.ledger.upsert_worker(record, alive=alive):
                self.on_change()

    async def heartbeat(self, worker_id: str, body: HeartbeatIn, arrived: float) -> list[WorkerCommand]:
        """Note the worker alive as of ``arrived`` (monotonic), write its record only if it changed (or is due for
        a refresh), and return the commands for it. The caller checked that this process acts as leader."""
        was_alive = worker_id in self.last_seen
        self.last_seen[worker_id] = max(arrived, self.last_seen.get(worker_id, arrived))
        record = self.records.get(worker_id)
        now = self.clock.monotonic()
        if record is None or self._needs_write(record, body, now):
            record = await self.workers.record_heartbeat(worker_id, body, new=record is None)
            self.records[worker_id] = record
            self._refresh_at[worker_id] = self._next_refresh(now)
            was_alive = False
        self._reported[worker_id] = body
        if not was_alive and self.state.ledger.upsert_worker(record, alive=True):
            self.on_change()
        return self._reconcile(worker_id, body)

    def _next_refresh(self, now: float) -> float:
        return now + self.worker_timeout * REFRESH_SHARE * random.uniform(REFRESH_JITTER, 1)

    def _needs_write(self, record: WorkerRecord, body: HeartbeatIn, now: float) -> bool:
        """Write the worker record when what it says changed, and otherwise about once per worker timeout."""
        if record.status == WorkerStatus.OFFLINE:
            return True
        if body is not self._reported.get(record.id) and (
            record.resources != body.resources
            or record.tags != body.tags
            or record.version != body.version
            or record.images != body.images
            or record.warm != body.warm
        ):
            return True
        return now >= self._refresh_at.get(record.id, 0.0)

    def _reconcile(self, worker_id: str, body: HeartbeatIn) -> list[WorkerCommand]:
        """Cancel what the worker holds but should not; count what it should hold but does not report."""
        holdings = self.state.ledger.by_worker.get(worker_id)
        if not body.running and not holdings:
            return []
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
                self._background.spawn(self._lose(held.run_id, held.attempt, message))
        return commands

    async def watch(self) -> None:
        """The eviction loop: every CHECK_EVERY_S, note how late this loop woke (a stall), then evict the silent."""
        while True:
            asked = self.clock.monotonic() + CHECK_EVERY_S
            await asyncio.sleep(CHECK_EVERY_S)
            woke = self.clock.monotonic()
            if woke - asked > STALL_MIN_S:
                self.stalls.add(asked, woke)
            await self.check()

    def silence(self, worker_id: str, now: float) -> float:
        """Seconds the leader could have heard the worker and did not (0 for a worker not seen alive)."""
        seen = self.last_seen.get(worker_id)
        if seen is None:
            return 0.0
        silent = now - seen
        if silent > self.worker_timeout:
            silent -= self.stalls.between(seen, now)
        return silent

    async def check(self) -> None:
        """Evict every worker silent for longer than the timeout."""
        if not self.acting():
            return
        for worker_id in list(self.last_seen):
            # Read now and the worker's last heartbeat afresh for each: an eviction awaited above let heartbeats in.
            silent = self.silence(worker_id, self.clock.monotonic())
            if silent > self.worker_timeout and self.acting():
                seen = self.last_seen.pop(worker_id)
                try:
                    await self.evict(worker_id, f"worker {worker_id} sent no heartbeat for {silent:.1f} s")
                except BaseException:
                    self.last_seen.setdefault(worker_id, seen)  # not evicted after all: judged again next time
                    raise

    async def evict(self, worker_id: str, message: str) -> None:
        if not self.acting():
            return
        log.warning("evicting: %s", message)
        self.state.ledger.set_schedulable(worker_id, False)
        self._reported.pop(worker_id, None)
        record = self.records.get(worker_id)
        if record is not None and record.status != WorkerStatus.OFFLINE:
            try:
                self.records[worker_id] = await self.workers.evict(worker_id)
            except BaseException:
                self.state.ledger.upsert_worker(record, alive=True)  # still as it was
                raise
        for held in self.state.ledger.on_worker(worker_id):
            if held.state == RunState.ASSIGNED:
                await self._apply(functools.partial(self.runs.unassign, held.run_id, held.attempt, message))
            else:
                await self._lose(held.run_id, held.attempt, message)
        self.on_change()

    async def _lose(self, run_id: str, attempt: int, message: str) -> None:
        fail = functools.partial(self.runs.fail_attempt, run_id, attempt, FailureReason.WORKER_LOST, message)
        await self._apply(fail)

    async def _apply(self, write: Callable[[], Awaitable[RunRecord]]) -> None:
        """One worker-loss write, made only while acting as leader."""
        if not self.acting():
            log.info("worker-loss write skipped: not acting as scheduler leader")
            return
        try:
            await write()
        except GyozaError as exc:
            log.info("worker-loss write skipped: %s", exc.message)
        self.on_change()

    async def stop(self) -> None:
        await self._background.cancel()
