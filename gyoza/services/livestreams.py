"""What a run stream and a topic stream send, independent of the transport (the route writes it as SSE).

A run stream: the run's events past the cursor and its log lines past the cursor (replay), then each new event and
log shipment as it is written, then ``end`` with the run once it is terminal. The watch and the log doorbell are
in place before the record and the logs are read, so nothing written meanwhile falls between replay and live;
events are sent by id and log lines by stream sequence, each only past the cursor, so nothing is sent twice.

``None`` in the output is a quiet interval (the route sends a heartbeat comment); the output ends at ``deadline``
(a ``loop.time()``) if one is given, without ``end``: the client resumes with the last id.
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Literal, overload

from pydantic import BaseModel, ValidationError

from gyoza.bus import names
from gyoza.core.views import run_view
from gyoza.schema import TERMINAL_STATES, Event, RunRecord, StreamCursor, known_fields
from gyoza.services.livelogs import LiveLogs
from gyoza.services.runs import RunService
from gyoza.services.streams import RunWatch, StreamHub
from gyoza.services.topics import MAX_PAGE, TopicFeed

HEARTBEAT_SPREAD = 0.8
# Events' JSON kept for the streams of this process: enough for every open stream's recent events.
EVENT_JSON_CACHE = 4096


@dataclass(frozen=True)
class Message:
    """One stream message: its kind (the SSE ``event:``), its JSON data and its id (the resume cursor)."""

    kind: str
    data: str
    id: str


class _AttemptOnly(BaseModel):
    attempt: int = 0


def _attempt_of(payload: bytes) -> int:
    try:
        return _AttemptOnly.model_validate_json(payload).attempt
    except ValidationError:
        return 0


class _Quiet:
    """Waits between live changes: a heartbeat interval, cut short by the deadline.

    Each interval is drawn from the last fifth below ``heartbeat_s``: streams that woke together (one event sent to
    all of them) do not all send their heartbeats in the same instant, which would stall the API for a moment."""

    def __init__(self, heartbeat_s: float, deadline: float | None) -> None:
        self.heartbeat_s, self.deadline = heartbeat_s, deadline

    def over(self) -> bool:
        return self.deadline is not None and asyncio.get_running_loop().time() >= self.deadline

    def interval(self) -> float:
        interval = self.heartbeat_s * random.uniform(HEARTBEAT_SPREAD, 1.0)
        if self.deadline is None:
            return interval
        return max(min(interval, self.deadline - asyncio.get_running_loop().time()), 0.0)


class RunStream:
    def __init__(self, runs: RunService, logs: LiveLogs, hub: StreamHub) -> None:
        self.runs, self.logs, self.hub = runs, logs, hub
        self.encode = EventJson()

    async def messages(
        self, run_id: str, cursor: StreamCursor, heartbeat_s: float, deadline: float | None = None
    ) -> AsyncGenerator[Message | None, None]:
        quiet = _Quiet(heartbeat_s, deadline)
        with self.hub.watch(run_id) as watch:

            def ring(payload: bytes) -> None:
                watch.ring(_attempt_of(payload))

            async with self.hub.doorbells.follow(names.run_log_subjects(run_id), ring):
                record = await self.runs.get(run_id)
                state = _Sent(cursor)
                for message in state.events(record, self.encode):
                    yield message
                yield state.status(record, force=True)
                async for message in self._logs(run_id, range(1, record.current.number + 1), state):
                    yield message
                async for live in self._live(watch, record, state, quiet):
                    yield live

    async def _live(
        self, watch: RunWatch, record: RunRecord, state: _Sent, quiet: _Quiet
    ) -> AsyncIterator[Message | None]:
        while record.state not in TERMINAL_STATES:
            if quiet.over():
                return
            if not await watch.wait(quiet.interval()):
                yield None
                continue
            latest, rang = watch.take()
            if latest is not None:
                record = latest
                for message in state.events(record, self.encode):
                    yield message
                if (status := state.status(record)) is not None:
                    yield status
            async for message in self._logs(record.id, sorted(rang), state):
                yield message
        # The worker ships an attempt's last lines before it reports the end: they are stored by now.
        async for message in self._logs(record.id, range(1, record.current.number + 1), state):
            yield message
        yield Message("end", known_fields(run_view(record)).model_dump_json(), str(state.cursor))

    async def _logs(self, run_id: str, attempts: Iterable[int], state: _Sent) -> AsyncIterator[Message]:
        for attempt in attempts:
            if attempt < 1:
                continue
            async for seq, lines in self.logs.read(run_id, attempt, state.cursor.logs):
                state.cursor = StreamCursor(state.cursor.events, seq)
                yield Message("log", lines.model_dump_json(), str(state.cursor))


class EventJson:
    """Each event's JSON, made once in this process for all the streams that send it (a stored event never changes);
    the most recent ``size`` are kept."""

    def __init__(self, size: int = EVENT_JSON_CACHE) -> None:
        self.size = size
        self._cache: OrderedDict[tuple[str, int], str] = OrderedDict()

    def __call__(self, run_id: str, event: Event) -> str:
        key = (run_id, event.id)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = known_fields(event).model_dump_json()
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return found


class _Sent:
    """How far a stream got: the cursor after the last message sent, and the run's status as last sent."""

    def __init__(self, cursor: StreamCursor) -> None:
        self.cursor = cursor
        self._status: tuple[object, ...] = ()

    @overload
    def status(self, record: RunRecord, force: Literal[True]) -> Message: ...

    @overload
    def status(self, record: RunRecord, force: bool = False) -> Message | None: ...

    def status(self, record: RunRecord, force: bool = False) -> Message | None:
        """``run`` with the run as it stands, when its state, reason, attempt or pending cancel changed (a PENDING
        run's reason changes with no event). A snapshot, not history: resuming sends the current one again."""
        attempt = record.current
        status = (attempt.number, attempt.state, attempt.state_reason, attempt.cancel_requested)
        if status == self._status and not force:
            return None
        self._status = status
        return Message("run", known_fields(run_view(record)).model_dump_json(), str(self.cursor))

    def events(self, record: RunRecord, encode: EventJson) -> list[Message]:
        """The record's events past the cursor (looked for from the end: usually one or two are new)."""
        start = len(record.events)
        while start > 0 and record.events[start - 1].id > self.cursor.events:
            start -= 1
        found = []
        for event in record.events[start:]:
            self.cursor = StreamCursor(event.id, self.cursor.logs)
            found.append(Message("event", encode(record.id, event), str(self.cursor)))
        return found


async def until_terminal(runs: RunService, hub: StreamHub, record: RunRecord, seconds: float) -> RunRecord:
    """The run once it is terminal, or as it stands after ``seconds`` (``?wait=`` of a run creation)."""
    if seconds <= 0 or record.state in TERMINAL_STATES:
        return record
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    with hub.watch(record.id) as watch:
        record = await runs.get(record.id)  # a version written before the watch was in place
        while record.state not in TERMINAL_STATES:
            remaining = deadline - loop.time()
            if remaining <= 0 or not await watch.wait(remaining):
                break
            latest, _ = watch.take()
            record = latest or record
    return record


async def topic_messages(
    topics: TopicFeed, hub: StreamHub, topic: str, after: int, heartbeat_s: float, deadline: float | None = None
) -> AsyncGenerator[Message | None, None]:
    """A topic's events past the cursor ``after`` (a GYOZA_TOPICS sequence, the SSE id), then each new one."""
    quiet = _Quiet(heartbeat_s, deadline)
    watch = RunWatch(topic)
    async with hub.doorbells.follow(names.topic_subject(topic), lambda _: watch.ring()):
        while not quiet.over():
            page = await topics.read(topic, after, MAX_PAGE)
            for event in page.data:
                yield Message("event", known_fields(event).model_dump_json(), str(event.cursor))
            after = page.next_cursor
            if len(page.data) == MAX_PAGE:
                continue
            if not await watch.wait(quiet.interval()):
                yield None
            watch.take()
