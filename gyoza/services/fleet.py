"""What the API asks of the scheduler leader on behalf of workers (heartbeats and drains), and the workers' event
reports over NATS.

A heartbeat is a NATS request to ``gyoza.workers.<id>.heartbeat`` with the same body as the REST call, answered by
whichever replica holds the leader lease (a NATS-mode worker sends that request directly). With no leader for a
moment (fail-over), the caller gets 503 and retries. A NATS-mode worker's events are requests to
``gyoza.workers.<id>.events``, answered by any one server replica (``WorkerReports``).
"""

from __future__ import annotations

import contextlib

from pydantic import ValidationError

from gyoza.bus import names
from gyoza.bus.port import Bus, Stoppable
from gyoza.bus.records import RecordMissing
from gyoza.errors import InvalidRequest, Unavailable, WorkerNotFound
from gyoza.schema import HeartbeatIn, WorkerEventReport, WorkerRecord, validation_problems
from gyoza.services.runs import RunService
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


class WorkerReports:
    """Answers ``gyoza.workers.<id>.events`` on every server replica (one queue group, so each report is applied
    once): the same service call as POST /runs/{id}/events, fenced by the worker id of the subject and the attempt,
    refused with the same errors (they cross the request as ``GyozaError``)."""

    def __init__(self, bus: Bus, runs: RunService) -> None:
        self.bus = bus
        self.runs = runs
        self._subscription: Stoppable | None = None

    async def start(self) -> None:
        self._subscription = await self.bus.serve(names.events_subject("*"), self.on_event, names.SERVERS_QUEUE)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None

    async def on_event(self, subject: str, data: bytes) -> bytes:
        worker_id = subject.split(".")[2]
        try:
            report = WorkerEventReport.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidRequest("invalid worker event", details=validation_problems(exc)) from None
        if report.worker_id != worker_id:
            # The subject names the reporting worker; a body naming another one is a confused or forged report.
            raise InvalidRequest(
                f"the event names worker {report.worker_id!r} but came on the subject of worker {worker_id!r}",
                details=[{"field": "worker_id", "problem": f"must be {worker_id!r}, the worker of the subject"}],
            )
        await self.runs.apply_worker_event(report.run_id, report)
        return b"{}"
