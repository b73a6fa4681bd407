"""Server-Sent Events for both clients: the line parser, the typed items, and the resume bookkeeping.

``GyozaClient.stream`` and ``AsyncGyozaClient.stream`` differ only in how they read lines. A stream that breaks
(the connection dropped, or the server closed it without ``end``: a ``timeout``, a restart) is opened again with the
last id as ``Last-Event-ID``, so the caller sees every item once, in order, until the run's ``end``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import httpx

from gyoza.schema import (
    Event,
    LogLines,
    OpRun,
    RunStreamEnd,
    RunStreamEvent,
    RunStreamItem,
    RunStreamLog,
    RunStreamRun,
    TopicEvent,
    TopicStreamEvent,
)

T = TypeVar("T")
# Consecutive failed (re)connections before a stream gives up and raises, and the pause between them.
MAX_RECONNECTS = 5
RECONNECT_PAUSE_S = 0.5
# Heartbeats come every 15 s by default: a read that waits much longer means the connection is dead.
STREAM_TIMEOUT = httpx.Timeout(30.0, read=90.0)
MIN_TIMEOUT_S, MAX_TIMEOUT_S = 0.05, 86400.0  # the ``timeout`` the server takes (a longer wait reconnects)


@dataclass(frozen=True)
class SseMessage:
    event: str
    data: str
    id: str | None


@dataclass
class SseParser:
    """The event-stream format (WHATWG HTML, "server-sent events"), fed one line at a time (without its newline)."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None
    last_id: str | None = None

    def line(self, line: str) -> SseMessage | None:
        """The message a blank line completes, or None."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SseMessage | None:
        if self._id is not None:
            self.last_id = self._id
        event, data, self._event, self._data, self._id = self._event, self._data, "", [], None
        if not data:
            return None
        return SseMessage(event or "message", "\n".join(data), self.last_id)


def run_item(message: SseMessage) -> RunStreamItem | None:
    """A run stream's message as its typed item; None for a kind this client does not know (a newer server's)."""
    item_id = message.id or ""
    if message.event == "event":
        return RunStreamEvent(id=item_id, event=Event.model_validate_json(message.data))
    if message.event == "log":
        return RunStreamLog(id=item_id, log=LogLines.model_validate_json(message.data))
    if message.event == "run":
        return RunStreamRun(id=item_id, run=OpRun.model_validate_json(message.data))
    if message.event == "end":
        return RunStreamEnd(id=message.id, run=OpRun.model_validate_json(message.data))
    return None


def topic_item(message: SseMessage) -> TopicStreamEvent | None:
    if message.event != "event":
        return None
    event = TopicEvent.model_validate_json(message.data)
    return TopicStreamEvent(id=message.id or str(event.cursor), event=event)


@dataclass
class StreamPlan(Generic[T]):
    """One stream across its reconnections: where to ask, what the last id was, and whether it ended."""

    path: str
    parse: Callable[[SseMessage], T | None]
    last_event_id: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    ends: Callable[[T], bool] = lambda item: False
    # time.monotonic() when the caller stops following (the server closes the stream then, without an end).
    deadline: float | None = None
    finished: bool = False
    failures: int = 0

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        params = dict(self.params)
        if self.deadline is not None:
            left = min(max(self.deadline - time.monotonic(), MIN_TIMEOUT_S), MAX_TIMEOUT_S)
            params["timeout"] = f"{left:.3f}"
        return client.build_request("GET", self.path, params=params or None, headers=headers, timeout=STREAM_TIMEOUT)

    def over(self) -> bool:
        """The caller's time is up: the stream ends here, without its end item."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.finished = True
        return self.finished

    def take(self, parser: SseParser, line: str) -> T | None:
        """The item a line completes (and note its id); the plan is finished after the end item."""
        message = parser.line(line)
        if message is None:
            return None
        self.failures = 0
        if message.id is not None:
            self.last_event_id = message.id
        item = self.parse(message)
        if item is not None and self.ends(item):
            self.finished = True
        return item

    def broke(self) -> bool:
        """The connection ended before the end item: True to reconnect, False once that failed too often."""
        self.failures += 1
        return self.failures <= MAX_RECONNECTS


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def run_plan(run_id: str, last_event_id: str | None = None, timeout: float | None = None) -> StreamPlan[RunStreamItem]:
    return StreamPlan(f"/runs/{run_id}/stream", run_item, last_event_id, deadline=_deadline(timeout),
                      ends=lambda item: isinstance(item, RunStreamEnd))  # fmt: skip


def topic_plan(
    topic: str, last_event_id: str | None = None, timeout: float | None = None
) -> StreamPlan[TopicStreamEvent]:
    return StreamPlan(f"/topics/{topic}/stream", topic_item, last_event_id, deadline=_deadline(timeout))
