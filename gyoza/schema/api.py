"""The topic feed, health and the uniform error body."""

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


class Health(Record):
    status: Literal["ok"] = "ok"
    version: str
    nats: Literal["embedded", "external"]


class ErrorInfo(Record):
    code: str
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)


class ErrorBody(Record):
    error: ErrorInfo
