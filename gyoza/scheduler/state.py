"""The scheduler's model of the cluster, derived from run records: the pending queue, runs waiting out a retry
back-off, and the ledger of what ASSIGNED/RUNNING attempts hold.

Every replica keeps it current from the run feed, so a standby that wins the lease starts placing at once. Record
versions are applied only when newer than the last one seen for that run; while the leader's own assignment write for
a run is in flight, deliveries of that run wait for it (``landed``), so the model never places a run twice and never
misses a change that came right after the assignment.

It also keeps the latest version (JSON, revision) of up to ``RECORDS_KEPT`` waiting runs, so that assigning one needs
no KV read before its compare-and-set (bounded: beyond it, an assignment reads the run first, as without it).
"""

from __future__ import annotations

import heapq

from gyoza.core.placement import Demand, run_limits
from gyoza.scheduler.ledger import Held, Ledger
from gyoza.scheduler.queue import PendingQueue, QueuedRun
from gyoza.schema import RunRecord, RunState
from gyoza.services.clock import SYSTEM_CLOCK, Clock

# About 1 KB each: some 20 MB at most, and several seconds of placement at full speed.
RECORDS_KEPT = 20_000
Known = tuple[bytes, int]


class ClusterState:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.queue = PendingQueue()
        self.ledger = Ledger()
        self.revisions: dict[str, int] = {}
        self.in_flight: set[str] = set()
        self.deferred: dict[str, tuple[RunRecord, int]] = {}  # the newest version delivered while in flight
        self.records: dict[str, Known] = {}
        # Runs in retry back-off: heap of (due, run id) plus the run to queue when due.
        self._delayed: list[tuple[float, str]] = []
        self.delayed: dict[str, tuple[float, QueuedRun]] = {}

    def apply(self, record: RunRecord, revision: int) -> None:
        """Apply a run record version (older ones and those of a run whose assignment is in flight are skipped)."""
        run_id = record.id
        if run_id in self.in_flight:
            # Kept, not dropped: a version newer than the assignment being written (a cancel landing right after
            # it) must still reach the model once the write is back (``landed``).
            deferred = self.deferred.get(run_id)
            if deferred is None or revision > deferred[1]:
                self.deferred[run_id] = (record, revision)
            return
        if revision <= self.revisions.get(run_id, 0):
            return
        self.revisions[run_id] = revision
        attempt = record.current
        if attempt.state == RunState.PENDING:
            self.ledger.release(run_id)
            self._enqueue(record)
            if run_id in self.records or len(self.records) < RECORDS_KEPT:
                self.records[run_id] = (record.model_dump_json().encode(), revision)
            return
        self.records.pop(run_id, None)
        self.queue.remove(run_id)
        self.delayed.pop(run_id, None)
        if attempt.state in (RunState.ASSIGNED, RunState.RUNNING) and attempt.worker_id is not None:
            held = Held(
                run_id=run_id, attempt=attempt.number, worker_id=attempt.worker_id,
                demand=_demand(record), gpu_ids=list(attempt.gpu_ids),
                state=attempt.state, cancel_requested=attempt.cancel_requested,
            )  # fmt: skip
            self.ledger.reserve(held)
            return
        self.ledger.release(run_id)
        self.revisions.pop(run_id, None)

    def landed(self, run_id: str, written: tuple[RunRecord, int] | None) -> None:
        """The assignment write of ``run_id`` is back (``written``: the version it wrote; None when it failed):
        apply that, then whatever newer came meanwhile."""
        self.in_flight.discard(run_id)
        deferred = self.deferred.pop(run_id, None)
        if written is not None:
            self.apply(*written)
        if deferred is not None:
            self.apply(*deferred)

    def requeue(self, run: QueuedRun) -> None:
        """Put a run taken for an assignment that failed back in the queue (unless it is back already)."""
        if run.run_id not in self.queue:
            self.queue.push(run)

    def _enqueue(self, record: RunRecord) -> None:
        attempt = record.current
        queued = self.queue.runs.get(record.id)
        if queued is not None and queued.attempt == attempt.number and queued.priority == record.priority:
            queued.reason_code, queued.reason_message = attempt.state_reason.code, attempt.state_reason.message
            return
        run = QueuedRun(
            run_id=record.id, attempt=attempt.number, priority=record.priority,
            created_at=record.created_at.timestamp(), demand=_demand(record),
            reason_code=attempt.state_reason.code, reason_message=attempt.state_reason.message,
        )  # fmt: skip
        due = attempt.not_before.timestamp() if attempt.not_before else 0.0
        if due > self.clock.time():
            self.queue.remove(record.id)
            self.delayed[record.id] = (due, run)
            heapq.heappush(self._delayed, (due, record.id))
        else:
            self.delayed.pop(record.id, None)
            self.queue.push(run)

    def promote_due(self, now: float) -> float | None:
        """Queue the runs whose back-off is over. Returns when the next one is due, if any."""
        while self._delayed:
            due, run_id = self._delayed[0]
            entry = self.delayed.get(run_id)
            if entry is None or entry[0] != due:
                heapq.heappop(self._delayed)
                continue
            if due > now:
                return due
            heapq.heappop(self._delayed)
            del self.delayed[run_id]
            self.queue.push(entry[1])
        return None


def _demand(record: RunRecord) -> Demand:
    limits = run_limits(record.op_definition, record.max_concurrent, record.concurrency, record.max_instances)
    warm = None
    if record.keep_warm_seconds and record.op_definition is not None and record.definition_version is not None:
        warm = (record.op_definition, record.definition_version)
    return Demand.of(record.constraints, record.tags, limits, record.image, record.owner or "", warm)
