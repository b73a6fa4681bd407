"""What the API asks of the scheduler leader on behalf of workers: heartbeats and drains.

A heartbeat is a NATS request to ``gyoza.workers.<id>.heartbeat`` with the same body as the REST call, answered by
whichever replica holds the leader lease (a worker may send that request directly). With no leader for a moment
(fail-over), the caller gets 503 and retries.
"""

from __future__ import annotations

import contextlib

from gyoza.bus import messaging, names
from gyoza.bus.connection import Bus
from gyoza.bus.records import RecordMissing
from gyoza.errors import Unavailable, WorkerNotFound
from gyoza.schema import HeartbeatIn, HeartbeatReply, WorkerRecord
from gyoza.services.workers import WorkerService

HEARTBEAT_REPLY_TIMEOUT_S = 5.0


class FleetService:
    def __init__(self, bus: Bus, workers: WorkerService) -> None:
        self.bus = bus
        self.workers = workers

    async def heartbeat(self, worker_id: str, body: HeartbeatIn) -> HeartbeatReply:
        payload = body.model_dump_json().encode()
        reply = await messaging.request(
            self.bus, names.heartbeat_subject(worker_id), payload, HEARTBEAT_REPLY_TIMEOUT_S
        )
        return HeartbeatReply.model_validate_json(reply)

    async def drain(self, worker_id: str) -> WorkerRecord:
        """Stop new assignments to the worker (durable in KV first), then tell the leader."""
        try:
            record = await self.workers.drain(worker_id)
        except RecordMissing:
            raise WorkerNotFound(f"no worker with id {worker_id!r}") from None
        # Wait for the leader to apply it, so no run is placed on the worker once the drain is acknowledged. With
        # no leader right now there is nothing to tell: the next one reads the drain from KV when it takes over.
        with contextlib.suppress(Unavailable):
            await messaging.request(
                self.bus, names.WORKER_CHANGED_SUBJECT, worker_id.encode(), HEARTBEAT_REPLY_TIMEOUT_S
            )
        return record
