"""The topic feed: every event of every run whose definition has ``event_delivery``, in the GYOZA_TOPICS stream.

The run record is the outbox. ``publish_new_events`` is called for every version of a run record the server sees
(its KV watch replays all records at start-up), publishes the events past ``topic_published_through`` with message
ids ``<run_id>.<event_id>`` (JetStream drops a repeat within the stream's duplicate window), then raises the mark by
CAS. A crash anywhere in between repeats at most the unmarked events, and the duplicate window absorbs them.
"""

from __future__ import annotations

from gyoza.bus import names
from gyoza.bus.connection import Bus
from gyoza.schema import RunRecord, TopicEvent, TopicEventList
from gyoza.services.runs import RunService

MAX_PAGE = 1000


class TopicFeed:
    def __init__(self, bus: Bus, runs: RunService) -> None:
        self.bus = bus
        self.runs = runs

    async def on_run(self, record: RunRecord, revision: int) -> None:
        """Run feed listener: publish what this version of the record has not yet published."""
        await self.publish_new_events(record)

    async def publish_new_events(self, record: RunRecord) -> None:
        delivery = record.event_delivery
        if delivery is None:
            return
        new = [e for e in record.events if e.id > record.topic_published_through]
        if not new:
            return
        subject = names.topic_subject(delivery.topic)
        for event in new:
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
            await self.bus.publish(subject, body, msg_id=f"{record.id}.{event.id}")
        await self.runs.change(record.id, lambda r: _raise_mark(r, new[-1].id), notify_scheduler=False)

    async def read(self, topic: str, after: int, limit: int) -> TopicEventList:
        found = await self.bus.read_subject(names.TOPICS_STREAM, names.topic_subject(topic), after, limit)
        events = [TopicEvent.model_validate_json(data).model_copy(update={"cursor": seq}) for seq, data in found]
        return TopicEventList(data=events, next_cursor=events[-1].cursor if events else after)


def _raise_mark(record: RunRecord, through: int) -> RunRecord | None:
    if record.topic_published_through >= through:
        return None
    record.topic_published_through = through
    return record
