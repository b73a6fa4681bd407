"""The topic feed, health, the uniform error body, and the markers of answers that are not JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from gyoza.schema._base import Record
from gyoza.schema.enums import EventType, RunState


class TopicEvent(Record):
    """One message of the GYOZA_TOPICS stream; ``cursor`` is its stream sequence (set when read)."""

    cursor: int = 0
    run_id: str
    attempt: int
    type: EventType
    t: datetime
    msg: str | int
    payload: dict[str, Any]
    state: RunState
    attributes: dict[str, Any] = Field(default_factory=dict)


class TopicEventList(Record):
    data: list[TopicEvent]
    next_cursor: int


class NatsHealth(Record):
    """This server's link to NATS: ``connected`` right now, and whether JetStream answered its last check (at most
    a few seconds old; a cluster without quorum or without a leader for the runs bucket fails it)."""

    mode: Literal["embedded", "external"]
    connected: bool
    jetstream: bool
    reconnects: int = Field(description="times the connection was re-established since the server started")


class Health(Record):
    """``status`` is ``unavailable`` (HTTP 503) while NATS cannot serve this server's requests."""

    status: Literal["ok", "unavailable"] = "ok"
    version: str
    nats: NatsHealth
    scheduler: Literal["leader", "standby"] = Field(description="whether this server is acting as scheduler now")
    pid: int | None = Field(default=None, description="the server process that answered (one of --workers)")


class ErrorInfo(Record):
    code: str
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)


class ErrorBody(Record):
    """A refusal: ``error.code`` says why (stable, SNAKE_CASE), ``details`` lists every problem as {field, problem}."""

    error: ErrorInfo


class NoContent(Record):
    """No content (the OpenAPI description shows no body for an answer documented with this)."""


class PlainText(Record):
    """Text (``text/plain; charset=utf-8``), not JSON."""
