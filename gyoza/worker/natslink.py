"""NATS mode's reports: events, live log lines and heartbeats as NATS requests on the worker's own connection; the
whole log is uploaded over REST.

``gyoza.workers.<id>.events`` is answered by any server replica, ``gyoza.workers.<id>.heartbeat`` by the scheduler
leader; a refusal comes back as the same ``GyozaError`` as over REST (409 STALE_ATTEMPT, 400, ...), and nobody
answering in time is ``Unavailable`` (503), which the attempt runner retries like a 5xx.
"""

from __future__ import annotations

import json

from gyoza.bus import names
from gyoza.bus.messaging import WorkerLink
from gyoza.client import AsyncGyozaClient
from gyoza.schema import HeartbeatIn, HeartbeatReply, LogChunkIn, WorkerEventIn

EVENT_REPLY_TIMEOUT_S = 10.0
HEARTBEAT_REPLY_TIMEOUT_S = 5.0


class NatsReports:
    def __init__(self, link: WorkerLink, client: AsyncGyozaClient, worker_id: str) -> None:
        self.link = link
        self.client = client
        self.worker_id = worker_id

    async def post_event(self, run_id: str, event: WorkerEventIn) -> object:
        return await self.link.request(names.events_subject(self.worker_id), report_body(run_id, event),
                                       EVENT_REPLY_TIMEOUT_S)  # fmt: skip

    async def ship_logs(self, run_id: str, chunk: LogChunkIn) -> object:
        """Live log lines, answered by any server replica (``gyoza.services.livelogs.LogReports``)."""
        return await self.link.request(names.log_reports_subject(self.worker_id), report_body(run_id, chunk),
                                       EVENT_REPLY_TIMEOUT_S)  # fmt: skip

    async def upload_logs(self, run_id: str, attempt: int, text: bytes, worker_id: str) -> None:
        await self.client.upload_logs(run_id, attempt, text, worker_id)

    async def heartbeat(self, worker_id: str, body: HeartbeatIn) -> HeartbeatReply:
        payload = body.model_dump_json().encode()
        reply = await self.link.request(names.heartbeat_subject(worker_id), payload, HEARTBEAT_REPLY_TIMEOUT_S)
        return HeartbeatReply.model_validate_json(reply)


def report_body(run_id: str, report: WorkerEventIn | LogChunkIn) -> bytes:
    """A ``WorkerEventReport`` (or ``LogChunkReport``): the report's own JSON with the run id put in front, without
    building another model."""
    return f'{{"run_id":{json.dumps(run_id)},'.encode() + report.model_dump_json().encode()[1:]
