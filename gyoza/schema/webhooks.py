"""Webhooks: what a definition or a run names (URL, event filter, secret), the delivery queue's messages, the
delivery log's entries and the API's view of a delivery (``GET /runs/{id}/deliveries``).

The secret is write-only. ``WebhookIn`` takes it; the stored ``Webhook`` keeps it as an *undeclared* field, so
``known_fields`` (which every API view and the query index pass a record through) leaves it out of every answer,
while KV keeps it (records write their unknown fields back). A view shows ``has_secret`` instead.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from gyoza.schema._base import Input, Record
from gyoza.schema.enums import EventType

MAX_WEBHOOKS = 5
MAX_URL_LENGTH = 2048
# Without an event filter a webhook hears how a run ended: the events a caller would otherwise poll for.
DEFAULT_WEBHOOK_EVENTS = (EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL with a host")
    return value


WebhookUrl = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_URL_LENGTH, pattern=r"^[^\s\x00-\x1f\x7f]+$"),
    AfterValidator(_http_url),
]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00]*$")]


def _unique(events: list[EventType]) -> list[EventType]:
    if len(set(events)) != len(events):
        raise ValueError("lists an event type twice")
    return events


class WebhookIn(Input):
    """A webhook as a definition or a run names it."""

    url: WebhookUrl
    events: Annotated[list[EventType], Field(min_length=1), AfterValidator(_unique)] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS),
        description="the event types (SPEC §2.3) that are delivered; default COMPLETED, FAILED, CANCELLED",
    )
    secret: Secret | None = Field(
        None, description="signs every delivery (X-Gyoza-Signature); write-only: answers show has_secret"
    )


Webhooks = Annotated[list[WebhookIn], Field(max_length=MAX_WEBHOOKS)]


class Webhook(Record):
    """A stored webhook, and how answers show it (the secret, an undeclared field, stays out of them)."""

    url: str
    events: list[EventType]
    has_secret: bool = False

    @model_validator(mode="before")
    @classmethod
    def _note_secret(cls, data: Any) -> Any:
        if isinstance(data, dict) and "has_secret" not in data:
            return {**data, "has_secret": bool(data.get("secret"))}
        return data

    @property
    def secret(self) -> str | None:
        extra = self.__pydantic_extra__ or {}
        value = extra.get("secret")
        return value if isinstance(value, str) and value else None


class DeliveryState(StrEnum):
    PENDING = "PENDING"  # queued, not tried yet (or redelivery asked for)
    RETRYING = "RETRYING"  # tried, failed, tried again at next_attempt_at
    DELIVERED = "DELIVERED"  # the receiver answered 2xx
    FAILED = "FAILED"  # every attempt failed; POST .../redeliver starts again


class WebhookJob(Record):
    """A message of the ``GYOZA_WEBHOOKS`` work queue: one attempt to deliver one (run, event, webhook)."""

    run_id: str
    delivery_id: str
    event_id: int
    hook: int  # index into the run's webhooks (the URL and secret are read from the run record, never copied)
    event_type: EventType
    body: str
    attempt: int  # counts every attempt of this delivery, redeliveries included
    last_attempt: int  # give up after this one
    first_of_round: int = 1  # the attempt that started this round (the first delivery, or a redelivery)
    not_before: float = 0.0  # epoch seconds: a retry waits for its backoff


class DeliveryLogEntry(Record):
    """A message of the ``GYOZA_WEBHOOK_LOG`` stream (subject per run): one step of one delivery."""

    run_id: str
    delivery_id: str
    event_id: int
    event_type: EventType
    url: str
    state: DeliveryState
    t: datetime
    attempt: int | None = None
    status_code: int | None = None
    error: str | None = None
    duration_ms: int | None = None
    next_attempt_at: datetime | None = None
    first_attempt: int | None = None  # on the entry that queues a round (first delivery or redelivery)


class DeliveryAttempt(Record):
    number: int
    t: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: int | None = None


class WebhookDelivery(Record):
    """One (event, webhook) of a run and how its delivery went."""

    id: str
    run_id: str
    event_id: int
    event_type: EventType
    url: str
    state: DeliveryState
    attempts: list[DeliveryAttempt] = Field(default_factory=list)
    next_attempt_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class DeliveryList(Record):
    data: list[WebhookDelivery]
