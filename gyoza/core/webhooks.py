"""Webhook rules, pure: which deliveries an event makes, the body and its signature, the retry back-off, and the
delivery log folded into what ``GET /runs/{id}/deliveries`` shows.

A receiver verifies a delivery by computing ``HMAC-SHA256(secret, timestamp + "." + body)`` over the raw body and
the ``X-Gyoza-Timestamp`` header, comparing it in constant time with the hex digest after ``sha256=`` in
``X-Gyoza-Signature``, and refusing timestamps too far from its own clock (a replayed delivery).
"""

from __future__ import annotations

import hashlib
import hmac
import json

from gyoza.schema import DeliveryAttempt, DeliveryLogEntry, Event, RunRecord, WebhookDelivery, known_fields

SIGNATURE_HEADER = "X-Gyoza-Signature"
TIMESTAMP_HEADER = "X-Gyoza-Timestamp"
EVENT_HEADER = "X-Gyoza-Event"
DELIVERY_HEADER = "X-Gyoza-Delivery"


def delivery_id(event_id: int, hook: int) -> str:
    """Stable for one (event, webhook) of a run, so a replayed outbox enqueues it under the same id."""
    return f"{event_id}-{hook}"


def hooks_for(record: RunRecord, event: Event) -> list[int]:
    """The indexes of the run's webhooks that want this event."""
    return [index for index, hook in enumerate(record.webhooks) if event.type in hook.events]


def delivery_body(record: RunRecord, event: Event, delivery: str) -> str:
    """What the receiver gets: the event, which run it belongs to, and the delivery id to de-duplicate on."""
    return json.dumps(
        {
            "delivery_id": f"{record.id}.{delivery}",
            "run_id": record.id,
            "op_definition": record.op_definition,
            "definition_version": record.definition_version,
            "labels": record.labels,
            "event": known_fields(event).model_dump(mode="json"),  # as GET /runs/{id}/events shows it
        },
        separators=(",", ":"),
    )


def signature(secret: str, timestamp: str, body: str) -> str:
    """The ``X-Gyoza-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``timestamp.body``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: str, header: str) -> bool:
    """What a receiver does (and what the tests do): recompute, compare in constant time."""
    return hmac.compare_digest(signature(secret, timestamp, body), header)


def retry_delay(failures: int, first_s: float, cap_s: float) -> float:
    """Seconds before the next attempt after ``failures`` failed ones in a row: doubling from ``first_s``, capped."""
    return float(min(first_s * 2 ** min(failures - 1, 60), cap_s))


def fold(entries: list[DeliveryLogEntry]) -> list[WebhookDelivery]:
    """The delivery log of a run (oldest entry first) as one view per delivery, in the order they were queued."""
    deliveries: dict[str, WebhookDelivery] = {}
    for entry in entries:
        view = deliveries.get(entry.delivery_id)
        if view is None:
            view = deliveries[entry.delivery_id] = WebhookDelivery(
                id=entry.delivery_id, run_id=entry.run_id, event_id=entry.event_id, event_type=entry.event_type,
                url=entry.url, state=entry.state, created_at=entry.t, updated_at=entry.t,
            )  # fmt: skip
        view.state, view.updated_at, view.next_attempt_at = entry.state, entry.t, entry.next_attempt_at
        if entry.attempt is not None:
            attempt = DeliveryAttempt(
                number=entry.attempt, t=entry.t, status_code=entry.status_code, error=entry.error,
                duration_ms=entry.duration_ms,
            )  # fmt: skip
            view.attempts.append(attempt)
    return list(deliveries.values())
