"""Live streams: the worker's live log lines, what ``GET /runs/{id}/stream`` sends, and its resume cursor.

A run stream's SSE ``id`` is a ``StreamCursor``, ``<event id>.<log sequence>``: the id of the last run event sent and
the GYOZA_LOGS stream sequence of the last log lines sent (0: none yet). Each message carries the cursor as it stands
after it, so ``Last-Event-ID`` resumes both the events and the log lines exactly where the client left off. A bare
``<event id>`` is read as ``<event id>.0`` (for a client that tracked event ids only: it gets every log line again).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from gyoza.schema._base import Input, Record, WorkerId
from gyoza.schema.api import TopicEvent
from gyoza.schema.runs import Event, OpRun

# One live shipment of log lines; the worker sends what it captured since the last one, in pieces of this size.
MAX_LOG_CHUNK_CHARS = 256 * 1024
# Run ids are uuid4 strings; one reaches a NATS subject, so it must be exactly that.
RUN_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_CURSOR = re.compile(r"(?P<events>[0-9]{1,15})(?:\.(?P<logs>[0-9]{1,19}))?")


class LogChunkIn(Input):
    """POST /runs/{id}/logs: new lines of an attempt's captured log, from the worker holding the attempt."""

    attempt: Annotated[int, Field(ge=1, le=10_000)]
    worker_id: WorkerId
    chunk: Annotated[int, Field(ge=1, le=10**9, description="1, 2, ... per attempt: a chunk sent again is stored once")]
    text: Annotated[str, Field(max_length=MAX_LOG_CHUNK_CHARS, description="complete lines, as GET /runs/{id}/logs")]


class LogChunkReport(LogChunkIn):
    """A NATS-mode worker's live log lines: the body of POST /runs/{id}/logs with the run id (request/reply on
    ``gyoza.workers.<id>.logs``)."""

    run_id: Annotated[str, StringConstraints(pattern=RUN_ID_PATTERN)]


class LogLines(Record):
    """One message of the GYOZA_LOGS stream (subject ``gyoza.logs.<run_id>.<attempt>``), and the data of a run
    stream's ``event: log``."""

    run_id: str
    attempt: int
    chunk: int
    text: str


@dataclass(frozen=True)
class StreamCursor:
    """Where a run stream stands: the last event id and the last GYOZA_LOGS sequence sent."""

    events: int = 0
    logs: int = 0

    def __str__(self) -> str:
        return f"{self.events}.{self.logs}"

    @classmethod
    def parse(cls, raw: str) -> StreamCursor | None:
        """``<event id>[.<log sequence>]``; None when ``raw`` is not one."""
        found = _CURSOR.fullmatch(raw.strip())
        if found is None:
            return None
        return cls(int(found["events"]), int(found["logs"] or 0))


class RunStreamEvent(Record):
    """``event: event``: a run event, as GET /runs/{id}/events shows it."""

    kind: Literal["event"] = "event"
    id: str
    event: Event


class RunStreamLog(Record):
    """``event: log``: new lines of an attempt's log (stdout and stderr, as GET /runs/{id}/logs shows them)."""

    kind: Literal["log"] = "log"
    id: str
    log: LogLines


class RunStreamRun(Record):
    """``event: run``: the run as it stands, at the start and whenever its state, state reason, attempt or pending
    cancel changes (a PENDING run's reason changes without an event). A snapshot: a resumed stream sends it again."""

    kind: Literal["run"] = "run"
    id: str
    run: OpRun


class RunStreamEnd(Record):
    """``event: end``: the run is terminal (data: the run); the server closes the stream after it."""

    kind: Literal["end"] = "end"
    id: str | None = None
    run: OpRun


RunStreamItem = RunStreamEvent | RunStreamLog | RunStreamRun | RunStreamEnd


class TopicStreamEvent(Record):
    """``event: event`` of ``GET /topics/{topic}/stream``; its SSE id is ``event.cursor``."""

    kind: Literal["event"] = "event"
    id: str
    event: TopicEvent


class LogLogged(Record):
    """POST /runs/{id}/logs: the shipment is durable; ``seq`` is its GYOZA_LOGS sequence."""

    seq: int


class EventStream(Record):
    """Server-Sent Events (``text/event-stream``), not JSON (the OpenAPI description shows that media type)."""
