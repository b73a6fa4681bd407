"""Live log lines: what a worker ships while its op runs goes into the GYOZA_LOGS stream, fenced like its events.

A shipment is ``(run, attempt, chunk number, text)``; it is stored only when the sending worker holds the current
attempt (409 ``STALE_ATTEMPT`` otherwise, as for events and log uploads), with the message id
``<run_id>.<attempt>.<chunk>``, so a shipment sent again (its answer was lost) is stored once. The per-attempt bound
is the worker's capture (the first 10 MiB, as the uploaded log): a worker ships only what its capture keeps. The
stream's own limits (a day, 2 GiB) bound the whole; the object store keeps each attempt's complete log.

REST workers ship with ``POST /runs/{id}/logs``; NATS-mode workers with a request on ``gyoza.workers.<id>.logs``
(``LogReports``, any one replica answers), the subject naming the worker as for their events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import ValidationError

from gyoza.bus import names
from gyoza.bus.port import Bus, Stoppable
from gyoza.errors import InvalidRequest
from gyoza.schema import LogChunkIn, LogChunkReport, LogLines, validation_problems
from gyoza.services.runs import RunService

# Shipments read from GYOZA_LOGS at a time (each at most MAX_LOG_CHUNK_CHARS of text).
READ_BATCH = 16


class LiveLogs:
    def __init__(self, bus: Bus, runs: RunService) -> None:
        self.bus = bus
        self.runs = runs

    async def append(self, run_id: str, chunk: LogChunkIn) -> int:
        """Store a shipment once it is fenced; returns its GYOZA_LOGS sequence (durable when this returns)."""
        await self.runs.check_log_writer(run_id, chunk.attempt, chunk.worker_id)
        lines = LogLines(run_id=run_id, attempt=chunk.attempt, chunk=chunk.chunk, text=chunk.text)
        return await self.bus.publish_durable(
            names.log_subject(run_id, chunk.attempt), lines.model_dump_json().encode(),
            msg_id=f"{run_id}.{chunk.attempt}.{chunk.chunk}",
        )  # fmt: skip

    async def read(self, run_id: str, attempt: int, after: int) -> AsyncIterator[tuple[int, LogLines]]:
        """Every shipment of the attempt with a GYOZA_LOGS sequence past ``after``, in order, a page at a time (a
        stream replaying a long log holds one page, however slowly its reader reads)."""
        subject = names.log_subject(run_id, attempt)
        while True:
            page = await self.bus.read_subject(names.LOGS_STREAM, subject, after, READ_BATCH)
            for seq, data in page:
                yield seq, LogLines.model_validate_json(data)
            if len(page) < READ_BATCH:
                return
            after = page[-1][0]


class LogReports:
    """Answers ``gyoza.workers.<id>.logs`` on every replica (one queue group): the same call as POST /runs/{id}/logs,
    the worker of the subject standing for the body's ``worker_id``."""

    def __init__(self, bus: Bus, logs: LiveLogs) -> None:
        self.bus = bus
        self.logs = logs
        self._subscription: Stoppable | None = None

    async def start(self) -> None:
        self._subscription = await self.bus.serve(names.log_reports_subject("*"), self.on_report, names.SERVERS_QUEUE)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None

    async def on_report(self, subject: str, data: bytes) -> bytes:
        worker_id = subject.split(".")[2]
        try:
            report = LogChunkReport.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidRequest("invalid log shipment", details=validation_problems(exc)) from None
        if report.worker_id != worker_id:
            raise InvalidRequest(
                f"the shipment names worker {report.worker_id!r} but came on the subject of worker {worker_id!r}",
                details=[{"field": "worker_id", "problem": f"must be {worker_id!r}, the worker of the subject"}],
            )
        seq = await self.logs.append(report.run_id, LogChunkIn.model_validate(report.model_dump(exclude={"run_id"})))
        return f'{{"seq":{seq}}}'.encode()
