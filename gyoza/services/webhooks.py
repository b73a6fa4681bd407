"""Webhooks on the bus: queueing deliveries, the delivery log, redelivery (docs/webhooks.md).

Queueing rides on the run-event outbox (``gyoza.services.topics``): this is one of its event sinks, so the scheduler
leader hands each new event of a run over once, from the same cursor as the topic feed. For every webhook of the run
that wants the event it publishes a log entry (PENDING) and the first attempt into the ``GYOZA_WEBHOOKS`` work
queue, both with message ids derived from (run, event, webhook, round, attempt): a replay after a crash or a change
of leader enqueues nothing twice (the streams' duplicate window is 10 minutes). A redelivery starts a new round the
same way; the deliverer drops what is left of an older round.

The delivery log is the ``GYOZA_WEBHOOK_LOG`` stream, one subject per run, append-only: every step of every delivery
(queued, each attempt's outcome) is one message, so its writers never race and never need compare-and-set, and a run's
log is read by subject (an indexed lookup), never by scanning keys. Nothing here writes the run record: a failing
webhook cannot change a run.
"""

from __future__ import annotations

from gyoza.bus.port import Bus
from gyoza.core.webhooks import delivery_body, delivery_id, fold, hooks_for
from gyoza.errors import NotFound
from gyoza.schema import (
    DeliveryList,
    DeliveryLogEntry,
    DeliveryState,
    Event,
    RunRecord,
    WebhookDelivery,
    WebhookJob,
)
from gyoza.services.clock import SYSTEM_CLOCK, Clock

QUEUE_STREAM = "GYOZA_WEBHOOKS"
QUEUE_SUBJECT = "gyoza.webhooks.deliveries"
DELIVERER = "deliverer"
LOG_STREAM = "GYOZA_WEBHOOK_LOG"
# Read a run's log this many entries at a time (the stream keeps up to 2000 per run: max_msgs_per_subject).
LOG_PAGE = 500


def log_subject(run_id: str) -> str:
    return f"gyoza.webhooks.log.{run_id}"


class WebhookQueue:
    """Every write of the webhooks: log entries and queue messages (both idempotent by message id)."""

    def __init__(self, bus: Bus, max_attempts: int, clock: Clock = SYSTEM_CLOCK) -> None:
        self.bus = bus
        self.max_attempts = max_attempts
        self.clock = clock

    # --- the outbox's event sink -------------------------------------------------------------------------------

    def wants(self, record: RunRecord) -> bool:
        return bool(record.webhooks)

    async def publish(self, record: RunRecord, event: Event) -> None:
        for hook in hooks_for(record, event):
            await self._queue_round(record, event, hook, first=1)

    # --- writes ------------------------------------------------------------------------------------------------

    async def _queue_round(self, record: RunRecord, event: Event, hook: int, first: int) -> DeliveryLogEntry:
        """Log a round of attempts starting at attempt ``first`` and queue that attempt. Round 1 comes from the
        outbox; a redelivery before the outbox got there uses the same ids, so only one of them counts."""
        delivery = delivery_id(event.id, hook)
        entry = DeliveryLogEntry(
            run_id=record.id, delivery_id=delivery, event_id=event.id, event_type=event.type,
            url=record.webhooks[hook].url, state=DeliveryState.PENDING, t=self.clock.utcnow(), first_attempt=first,
        )  # fmt: skip
        job = WebhookJob(
            run_id=record.id, delivery_id=delivery, event_id=event.id, hook=hook, event_type=event.type,
            body=delivery_body(record, event, delivery), attempt=first, last_attempt=first + self.max_attempts - 1,
            first_of_round=first,
        )  # fmt: skip
        await self.note(entry, f"q{first}")
        await self.enqueue(job)
        return entry

    async def note(self, entry: DeliveryLogEntry, step: str) -> None:
        """Append a step to the run's delivery log: ``q<n>`` queues a round from attempt n, ``a<n>`` is attempt n."""
        await self.bus.publish_durable(
            log_subject(entry.run_id), entry.model_dump_json().encode(),
            msg_id=f"{entry.run_id}.{entry.delivery_id}.{step}",
        )  # fmt: skip

    async def enqueue(self, job: WebhookJob) -> None:
        msg_id = f"{job.run_id}.{job.delivery_id}.{job.first_of_round}.{job.attempt}"
        await self.bus.publish_durable(QUEUE_SUBJECT, job.model_dump_json().encode(), msg_id=msg_id)

    # --- reads and redelivery ----------------------------------------------------------------------------------

    async def entries(self, run_id: str, delivery: str | None = None) -> list[DeliveryLogEntry]:
        """The run's delivery log, oldest first (only ``delivery``'s steps when given)."""
        found: list[DeliveryLogEntry] = []
        after = 0
        while True:
            page = await self.bus.read_subject(LOG_STREAM, log_subject(run_id), after, LOG_PAGE)
            found.extend(DeliveryLogEntry.model_validate_json(data) for _, data in page)
            if len(page) < LOG_PAGE:
                return [e for e in found if delivery is None or e.delivery_id == delivery]
            after = page[-1][0]

    async def deliveries(self, run_id: str) -> DeliveryList:
        return DeliveryList(data=fold(await self.entries(run_id)))

    async def superseded(self, job: WebhookJob) -> bool:
        """A redelivery started a newer round: this job's round is over (its pending retries are dropped)."""
        entries = await self.entries(job.run_id, job.delivery_id)
        return any((e.first_attempt or 0) > job.first_of_round for e in entries)

    async def redeliver(self, record: RunRecord, delivery: str) -> WebhookDelivery:
        """Start a new round of attempts now, whatever the delivery's state: a retry still waiting is superseded."""
        event_id, hook = (int(part) for part in delivery.split("-"))
        event = next((e for e in record.events if e.id == event_id), None)
        if event is None or hook not in hooks_for(record, event):
            raise NotFound(f"run {record.id} has no webhook delivery {delivery!r}")
        entries = await self.entries(record.id, delivery)
        first = max((e.attempt or 0 for e in entries), default=0) + 1
        entry = await self._queue_round(record, event, hook, first)
        return fold([*entries, entry])[0]
