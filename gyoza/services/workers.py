"""Worker records in KV ``gyoza_workers``: registered, refreshed and marked offline by the scheduler leader.

Only the leader writes them, but always by compare-and-set, so a deposed leader that has not noticed yet cannot
overwrite its successor's view.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from gyoza.bus.port import Bus
from gyoza.bus.records import RecordExists, RecordMissing, RecordStore
from gyoza.core import workerstate
from gyoza.schema import HeartbeatIn, WorkerRecord, WorkerStatus
from gyoza.services.clock import utcnow

# Records remembered (value and revision) by the store, so that the leader's next write of a worker it wrote last is
# one compare-and-set instead of a read and a write.
REMEMBERED_WORKERS = 20_000


class WorkerService:
    def __init__(self, bus: Bus, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = RecordStore(bus.workers, WorkerRecord, remember=REMEMBERED_WORKERS)
        self.clock = clock

    async def all(self) -> list[WorkerRecord]:
        """Every worker record (the fleet is small: hundreds, read once when a leader takes over)."""
        return [record async for record in self.store.values()]

    async def get(self, worker_id: str) -> WorkerRecord | None:
        try:
            return (await self.store.get(worker_id))[0]
        except RecordMissing:
            return None

    async def record_heartbeat(self, worker_id: str, heartbeat: HeartbeatIn, new: bool = False) -> WorkerRecord:
        """Register an unknown worker, refresh a known one, re-admit an offline one.

        ``new``: the caller has never seen this worker, so its record is most likely missing: try to create it before
        reading it (one round trip for a worker joining, as when a fleet starts; a record found is then refreshed)."""
        now = self.clock()

        def refresh(record: WorkerRecord) -> WorkerRecord:
            record.resources, record.tags, record.version = heartbeat.resources, list(heartbeat.tags), heartbeat.version
            record.images, record.warm = list(heartbeat.images), list(heartbeat.warm)
            record.last_heartbeat = now
            record.status = workerstate.heard(record.status)
            return record

        while True:
            if not new:
                try:
                    return (await self.store.mutate(worker_id, refresh))[0]
                except RecordMissing:
                    pass
            new = False
            fresh = WorkerRecord(
                id=worker_id, status=WorkerStatus.ONLINE, resources=heartbeat.resources, tags=list(heartbeat.tags),
                version=heartbeat.version, images=list(heartbeat.images), warm=list(heartbeat.warm), registered_at=now,
                last_heartbeat=now,
            )  # fmt: skip
            try:
                await self.store.create(worker_id, fresh)
                return fresh
            except RecordExists:
                continue

    async def _transition(self, worker_id: str, transition: Callable[[WorkerStatus], WorkerStatus]) -> WorkerRecord:
        def change(record: WorkerRecord) -> WorkerRecord | None:
            status = transition(record.status)
            if status == record.status:
                return None
            record.status = status
            return record

        return (await self.store.mutate(worker_id, change))[0]

    async def evict(self, worker_id: str) -> WorkerRecord:
        return await self._transition(worker_id, workerstate.evicted)

    async def drain(self, worker_id: str) -> WorkerRecord:
        return await self._transition(worker_id, workerstate.drained)
