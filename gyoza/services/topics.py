"""The topic feed: every event of every run whose definition has ``event_delivery``, in the GYOZA_TOPICS stream.
The same outbox carries other event sinks on its cursor (``EventSink``: the webhook queue), so each new event of
a run is handed to every sink that wants the run, once, by the same leader, with the same replay guarantees.

Published by one process, the scheduler leader, and with no write of its own: one worker event is one run-record
write. Every replica follows the run feed; the leader publishes each version's new events with message id
``<run_id>.<event_id>`` (JetStream drops a repeat within the stream's duplicate window, 10 minutes).

Where it got to is a cursor, the runs-bucket revision through which every version's events are out. It travels in
the leader lease record, which the leader rewrites every few seconds anyway, so it costs no write either. A standby
keeps only the versions past the last cursor it read (a few seconds' worth); when it takes over it publishes what
they hold beyond what was out through the cursor. Events of a run first seen past the cursor (a server started
just then) count as out when older than ``REPUBLISH_WINDOW_S`` before the cursor was written, so a repeat stays
within the duplicate window. A crash anywhere repeats at most those few events, and the window absorbs them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from gyoza.bus import names
from gyoza.bus.port import Bus
from gyoza.errors import GyozaError
from gyoza.schema import Event, EventDelivery, RunRecord, TopicEvent, TopicEventList

log = logging.getLogger(__name__)

MAX_PAGE = 1000
# Well inside the GYOZA_TOPICS duplicate window (600 s), with room for clock skew between replicas.
REPUBLISH_WINDOW_S = 120.0


@dataclass
class _Pending:
    """A run's latest version past the cursor, and (revision, last event id) of each version seen past it."""

    record: RunRecord
    revision: int
    versions: list[tuple[int, int]] = field(default_factory=list)


class EventSink(Protocol):
    """Publishes what it derives from a run's events, each with a message id that makes a repeat a no-op (the
    outbox may hand an event over again after a crash or a change of leader)."""

    def wants(self, record: RunRecord) -> bool: ...

    async def publish(self, record: RunRecord, event: Event) -> None: ...


def _last_event_id(record: RunRecord) -> int:
    return record.events[-1].id if record.events else 0


class TopicFeed:
    def __init__(self, bus: Bus, sinks: Sequence[EventSink] = ()) -> None:
        self.bus = bus
        self.sinks = tuple(sinks)
        self._marks: dict[str, int] = {}  # run id -> the last event id known to be out
        self._backlog: dict[str, _Pending] = {}  # runs with versions past the cursor, not yet out
        self._through = 0  # every version up to this runs-bucket revision is out
        self._seen = 0  # the highest revision the run feed delivered
        self._leading = False
        self._since: datetime | None = None  # unmarked runs: events older than this count as out
        self._flushing = asyncio.Lock()

    def cursor(self) -> int:
        """The revision through which every version's events are out (for the lease record)."""
        if self._backlog:
            return min(pending.versions[0][0] for pending in self._backlog.values()) - 1
        return max(self._through, self._seen) if self._leading else self._through

    async def on_run(self, record: RunRecord, revision: int) -> None:
        """Run feed listener (every replica): note the version; the leader publishes it at once."""
        self._seen = max(self._seen, revision)
        if record.event_delivery is None and not any(sink.wants(record) for sink in self.sinks):
            return
        if revision <= self._through:
            self._mark(record.id, _last_event_id(record))
            return
        pending = self._backlog.setdefault(record.id, _Pending(record, revision))
        if revision >= pending.revision:
            pending.record, pending.revision = record, revision
        pending.versions.append((revision, _last_event_id(record)))
        if self._leading:
            await self.flush()

    def follow(self, through: int) -> None:
        """A standby read the leader's cursor: what it holds up to there is out."""
        if through <= self._through:
            return
        self._through = through
        for run_id, pending in list(self._backlog.items()):
            for revision, last_event_id in [v for v in pending.versions if v[0] <= through]:
                self._mark(run_id, last_event_id)
                pending.versions.remove((revision, last_event_id))
            if not pending.versions:
                del self._backlog[run_id]

    async def take_over(self, through: int, written_at: datetime | None) -> None:
        """Lead from the previous leader's cursor (``written_at``: when it wrote it); publish what it left."""
        self.follow(through)
        self._since = written_at - timedelta(seconds=REPUBLISH_WINDOW_S) if written_at is not None else None
        self._leading = True
        await self.flush()

    def step_down(self) -> None:
        self._through = self.cursor()
        self._leading = False

    async def flush(self) -> None:
        """Publish the backlog in revision order; what NATS cannot take now stays for the next call."""
        async with self._flushing:  # one pass at a time: the run feed and the leader's loop both call this
            for pending in sorted(self._backlog.values(), key=lambda p: p.versions[0][0]):
                if not self._leading:
                    return
                record, revision = pending.record, pending.revision
                try:
                    await self._publish(record)
                except GyozaError as exc:
                    log.warning("topic events of run %s not published yet: %s", record.id, exc.message)
                    return
                if pending.revision == revision:  # no newer version came in meanwhile
                    self._backlog.pop(record.id, None)

    def _mark(self, run_id: str, last_event_id: int) -> None:
        self._marks[run_id] = max(self._marks.get(run_id, 0), last_event_id)

    async def _publish(self, record: RunRecord) -> None:
        mark = self._marks.get(record.id)
        sinks = [sink for sink in self.sinks if sink.wants(record)]
        for event in record.events:
            if (mark is not None and event.id <= mark) or (mark is None and self._since and event.t < self._since):
                continue
            if record.event_delivery is not None:
                await self._publish_to_topic(record, record.event_delivery, event)
            for sink in sinks:
                await sink.publish(record, event)
            self._marks[record.id] = event.id

    async def _publish_to_topic(self, record: RunRecord, delivery: EventDelivery, event: Event) -> None:
        message = TopicEvent(
            run_id=record.id,
            attempt=event.attempt,
            type=event.type,
            t=event.t,
            msg=event.msg,
            payload=event.payload,
            state=event.state,
            attributes=delivery.attributes,
        )
        body = message.model_dump_json(exclude={"cursor"}).encode()
        await self.bus.publish_durable(names.topic_subject(delivery.topic), body, msg_id=f"{record.id}.{event.id}")

    async def read(self, topic: str, after: int, limit: int) -> TopicEventList:
        found = await self.bus.read_subject(names.TOPICS_STREAM, names.topic_subject(topic), after, limit)
        events = [TopicEvent.model_validate_json(data).model_copy(update={"cursor": seq}) for seq, data in found]
        return TopicEventList(data=events, next_cursor=events[-1].cursor if events else after)
