"""Server-Sent Events: ``GET /runs/{id}/stream``, ``GET /topics/{topic}/stream``, and the worker's live log lines.

Wire format (``text/event-stream``, see ``docs/streams.md``)::

    id: 3.0                      <- the resume cursor after this message
    event: event                 <- a run event (data: the Event JSON)
    data: {"id":3,"attempt":1,"type":"STARTED",...}

    id: 3.0
    event: run                   <- the run as it stands: at the start and when its state or reason changes
    data: {"id":"...","state":"RUNNING",...}

    id: 3.41
    event: log                   <- new log lines (data: {run_id, attempt, chunk, text})
    data: {"run_id":"...","attempt":1,"chunk":1,"text":"2025-... stdout loading\\n"}

    : keep-alive                 <- a heartbeat comment every ``heartbeat`` seconds without news

    id: 5.41
    event: end                   <- the run is terminal (data: the run); the server closes the stream
    data: {"id":"...","state":"COMPLETED",...}

A run stream's id is ``<event id>.<GYOZA_LOGS sequence>`` (``gyoza.schema.StreamCursor``); a topic stream's is the
GYOZA_TOPICS sequence (the cursor of GET /topics/{topic}/events). Send the last id back as ``Last-Event-ID`` (an
EventSource does so by itself when it reconnects) or as ``?last_event_id=`` to resume with nothing lost or
repeated; the header wins when both are given. Errors found before the stream starts are the usual JSON errors.
"""

from __future__ import annotations

import asyncio
import re

from pydantic import BaseModel, Field
from quart import Blueprint, Response, request
from quart_schema import document_querystring, document_request, document_response

from gyoza.errors import InvalidRequest
from gyoza.schema import TOPIC_PATTERN, EventStream, LogChunkIn, LogLogged, StreamCursor
from gyoza.server.context import ctx
from gyoza.server.http import checked_run_id, json_response, read_body, refusals
from gyoza.server.sse import event_stream, query_seconds
from gyoza.services.livestreams import topic_messages

blueprint = Blueprint("streams", __name__)

DEFAULT_HEARTBEAT_S = 15.0


class StreamQuery(BaseModel):
    last_event_id: str | None = Field(None, description="resume after this id (the Last-Event-ID header wins)")
    heartbeat: float = Field(DEFAULT_HEARTBEAT_S, description="seconds between keep-alive comments (0.05-300)")
    timeout: float | None = Field(None, description="close the stream after this many seconds (0.05-86400)")


def _last_event_id() -> str | None:
    header = request.headers.get("Last-Event-ID")
    return header if header is not None else request.args.get("last_event_id")


def _timing() -> tuple[float, float | None]:
    heartbeat = query_seconds("heartbeat", DEFAULT_HEARTBEAT_S, 0.05, 300) or DEFAULT_HEARTBEAT_S
    timeout = query_seconds("timeout", None, 0.05, 86400)
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    return heartbeat, deadline


def _bad_id(expected: str) -> InvalidRequest:
    return InvalidRequest(
        f"Last-Event-ID must be {expected}", [{"field": "Last-Event-ID", "problem": f"expected {expected}"}]
    )


@blueprint.get("/runs/<run_id>/stream")
@document_querystring(StreamQuery)
@document_response(EventStream)
@refusals(400, 404)
async def run_stream(run_id: str) -> Response:
    """The run's events and log lines as Server-Sent Events, live: ``event: event`` (data: an Event), ``event: log``
    (data: {run_id, attempt, chunk, text}), ``event: run`` (data: the run, at the start and whenever its state,
    reason, attempt or pending cancel changes), ``: keep-alive`` comments, then ``event: end`` (data: the run) once
    it is terminal, and the stream closes.

    Each message's ``id`` is ``<event id>.<log sequence>``, the cursor after it: send the last one back as the
    ``Last-Event-ID`` header (or ``?last_event_id=``) to resume with no event or log line lost or repeated. A bare
    ``<event id>`` resumes the events after it and sends every log line.
    """
    run_id = checked_run_id(run_id)
    raw = _last_event_id()
    cursor = StreamCursor() if raw is None else StreamCursor.parse(raw)
    if cursor is None:
        raise _bad_id("<event id> or <event id>.<log sequence> (integers), as a run stream's id")
    heartbeat, deadline = _timing()
    await ctx().runs.get(run_id)  # 404 now, before the stream starts
    return event_stream(ctx().run_streams.messages(run_id, cursor, heartbeat, deadline))


@blueprint.get("/topics/<topic>/stream")
@document_querystring(StreamQuery)
@document_response(EventStream)
@refusals(400)
async def topic_stream(topic: str) -> Response:
    """A topic feed as Server-Sent Events: ``event: event`` with a topic event for every event published to the
    topic after the cursor, live, and ``: keep-alive`` comments. The id is the GYOZA_TOPICS sequence (the cursor of
    GET /topics/{topic}/events): resume with ``Last-Event-ID``. The stream stays open until the client leaves (or
    ``timeout``)."""
    if not re.fullmatch(TOPIC_PATTERN, topic):
        raise InvalidRequest("invalid topic name", [{"field": "topic", "problem": f"must match {TOPIC_PATTERN}"}])
    raw = _last_event_id()
    after = 0 if raw is None else _topic_cursor(raw)
    heartbeat, deadline = _timing()
    context = ctx()
    return event_stream(topic_messages(context.topics, context.stream_hub, topic, after, heartbeat, deadline))


def _topic_cursor(raw: str) -> int:
    if not re.fullmatch(r"[0-9]{1,19}", raw.strip()):
        raise _bad_id("a topic stream's id: a GYOZA_TOPICS sequence (an integer)")
    return int(raw.strip())


@blueprint.post("/runs/<run_id>/logs")
@document_request(LogChunkIn)
@document_response(LogLogged, 201)
@refusals(400, 404, 409, 413, 415)
async def ship_log_lines(run_id: str) -> Response:
    """The worker holding an attempt ships new lines of its log while the op runs (live, for the run streams).

    Fenced like its events: only the worker holding the current attempt (409 STALE_ATTEMPT otherwise). ``chunk``
    numbers the attempt's shipments from 1: a shipment sent again is stored once. The whole log is still uploaded
    with PUT /runs/{id}/logs.
    """
    run_id = checked_run_id(run_id)
    body = await read_body(LogChunkIn)
    seq = await ctx().live_logs.append(run_id, body)
    return json_response(LogLogged(seq=seq), 201)
