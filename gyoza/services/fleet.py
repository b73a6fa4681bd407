"""What the API asks of the scheduler leader on behalf of workers: heartbeats and drains.

A heartbeat is a NATS request to ``gyoza.workers.<id>.heartbeat`` with the same body as the REST call, answered by
whichever replica holds the leader lease (a worker may send that request directly). With no leader for a moment
(fail-over), the caller gets 503 and retries.
"""

from __future__ import annotations

import contextlib

from gyoza.bus import names
from gyoza.bus.port import Bus
from gyoza.bus.records import RecordMissing
from gyoza.errors import Unavailable, WorkerNotFound
from gyoza.schema import HeartbeatIn, WorkerRecord
from gyoza.services.workers import WorkerService

HEARTBEAT_REPLY_TIMEOUT_S = 5.0


class HeartbeatBodies:
    """The last heartbeat body of each worker, with its parsed form: a worker's heartbeat that is byte for byte the
    one before (an idle or steady worker's usually is) is not validated again."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[bytes, HeartbeatIn]] = {}

    def known(self, worker_id: str, raw: bytes) -> HeartbeatIn | None:
        last = self._last.get(worker_id)
        return last[1] if last is not None and last[0] == raw else None

    def remember(self, worker_id: str, raw: bytes, body: HeartbeatIn) -> None:
        self._last[worker_id] = (raw, body)

    def parse(self, worker_id: str, raw: bytes) -> HeartbeatIn:
        """The parsed body; ``pydantic.ValidationError`` when it is invalid."""
        body = self.known(worker_id, raw)
        if body is None:
            body = HeartbeatIn.model_validate_json(raw)
            self.remember(worker_id, raw, body)
        return body


class FleetService:
    def __init__(self, bus: Bus, workers: WorkerService) -> None:
        self.bus = bus
        self.workers = workers

    async def heartbeat(self, worker_id: str, payload: bytes) -> bytes:
        """Forward a heartbeat body to the leader; returns its reply's JSON, or raises the error it refused with."""
        return await self.bus.request(names.heartbeat_subject(worker_id), payload, HEARTBEAT_REPLY_TIMEOUT_S)

    async def drain(self, worker_id: str) -> WorkerRecord:
        """Stop new assignments to the worker (durable in KV first), then tell the leader."""
        try:
            record = await self.workers.drain(worker_id)
        except RecordMissing:
            raise WorkerNotFound(f"no worker with id {worker_id!r}") from None
        # Wait for the leader to apply it, so no run is placed on the worker once the drain is acknowledged. With
        # no leader right now there is nothing to tell: the next one reads the drain from KV when it takes over.
        with contextlib.suppress(Unavailable):
            await self.bus.request(names.WORKER_CHANGED_SUBJECT, worker_id.encode(), HEARTBEAT_REPLY_TIMEOUT_S)
        return record
