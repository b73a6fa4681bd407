"""Webhook rules without a server: the signature a receiver checks, the back-off, the event filter, the delivery log
folded into views, and the write-only secret."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from gyoza.core.webhooks import delivery_body, delivery_id, fold, hooks_for, retry_delay, signature, verify
from gyoza.schema import (
    DeliveryLogEntry,
    DeliveryState,
    Event,
    EventType,
    OpDefinition,
    OpDefinitionIn,
    OpRun,
    RunRecord,
    RunState,
    Webhook,
    WebhookIn,
    known_fields,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = '{"run_id":"r1","event":{"type":"COMPLETED"}}'
    expected = hmac.new(b"s3cret", b"1767225600." + body.encode(), hashlib.sha256).hexdigest()
    assert signature("s3cret", "1767225600", body) == f"sha256={expected}"
    assert verify("s3cret", "1767225600", body, f"sha256={expected}")


@pytest.mark.parametrize(
    ("secret", "timestamp", "body"),
    [("other", "1767225600", "{}"), ("s3cret", "1767225601", "{}"), ("s3cret", "1767225600", '{"x":1}')],
)
def test_a_changed_secret_timestamp_or_body_does_not_verify(secret: str, timestamp: str, body: str) -> None:
    assert not verify(secret, timestamp, body, signature("s3cret", "1767225600", "{}"))


def test_retries_back_off_exponentially_up_to_the_cap() -> None:
    assert [retry_delay(n, 2.0, 300.0) for n in range(1, 11)] == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert retry_delay(10_000, 0.05, 1.0) == 1.0  # no overflow on a long streak


def _record(webhooks: list[dict[str, object]]) -> RunRecord:
    return RunRecord.model_validate(
        {
            "id": "r1", "image": "busybox", "created_at": T0, "updated_at": T0, "attempts": [],
            "webhooks": [WebhookIn.model_validate_json(json.dumps(h)).model_dump() for h in webhooks],
        }
    )  # fmt: skip


def _event(kind: EventType, event_id: int = 1) -> Event:
    return Event(id=event_id, attempt=1, type=kind, t=T0, state=RunState.COMPLETED)


def test_each_webhook_hears_only_its_events_by_default_how_a_run_ended() -> None:
    record = _record([{"url": "https://a.example/h"}, {"url": "https://b.example/h", "events": ["STARTED"]}])
    assert hooks_for(record, _event(EventType.COMPLETED)) == [0]
    assert hooks_for(record, _event(EventType.STARTED)) == [1]
    assert hooks_for(record, _event(EventType.PROGRESS)) == []
    assert delivery_id(7, 1) == "7-1"
    assert '"delivery_id":"r1.7-1"' in delivery_body(record, _event(EventType.STARTED, 7), "7-1")


def test_the_secret_is_kept_in_the_record_and_left_out_of_every_view() -> None:
    record = _record([{"url": "https://a.example/h", "secret": "s3cret"}, {"url": "https://b.example/h"}])
    stored = record.model_dump_json()
    assert "s3cret" in stored and RunRecord.model_validate_json(stored).webhooks[0].secret == "s3cret"
    hooks = [known_fields(hook) for hook in record.webhooks]
    assert [h.model_dump() for h in hooks] == [
        {"url": "https://a.example/h", "events": ["COMPLETED", "FAILED", "CANCELLED"], "has_secret": True},
        {"url": "https://b.example/h", "events": ["COMPLETED", "FAILED", "CANCELLED"], "has_secret": False},
    ]
    assert "secret" not in OpRun.model_json_schema()["$defs"]["Webhook"]["properties"]
    assert Webhook.model_validate({"url": "https://c.example", "events": []}).secret is None


def _entry(state: DeliveryState, seconds: float, **fields: object) -> DeliveryLogEntry:
    return DeliveryLogEntry.model_validate(
        {
            "run_id": "r1", "delivery_id": "3-0", "event_id": 3, "event_type": "FAILED", "url": "https://a.example/h",
            "state": state, "t": T0 + timedelta(seconds=seconds), **fields,
        }
    )  # fmt: skip


def test_the_log_folds_into_one_view_per_delivery_with_its_attempts() -> None:
    retry_at = T0 + timedelta(seconds=3)
    log = [
        _entry(DeliveryState.PENDING, 0, first_attempt=1),
        _entry(DeliveryState.RETRYING, 1, attempt=1, error="ConnectError: refused", next_attempt_at=retry_at),
        _entry(DeliveryState.RETRYING, 3, attempt=2, status_code=503, error="HTTP 503: busy", next_attempt_at=retry_at),
        _entry(DeliveryState.DELIVERED, 7, attempt=3, status_code=204, duration_ms=12),
    ]
    [view] = fold(log)
    assert view.state is DeliveryState.DELIVERED and view.next_attempt_at is None
    assert (view.created_at, view.updated_at) == (T0, T0 + timedelta(seconds=7))
    assert [(a.number, a.status_code) for a in view.attempts] == [(1, None), (2, 503), (3, 204)]
    [retrying] = fold(log[:2])
    assert retrying.state is DeliveryState.RETRYING and retrying.next_attempt_at == retry_at


def test_a_version_is_the_same_content_whether_its_secret_is_shown_or_not() -> None:
    # ``gyoza deploy`` compares the file's definition (secret and all) with the server's answer (no secret).
    body = {
        "name": "clf",
        "version": "1",
        "image": "busybox",
        "webhooks": [{"url": "https://a.example", "secret": "s"}],
    }
    mine = OpDefinition(id="clf", created_at=T0, **OpDefinitionIn.model_validate_json(json.dumps(body)).model_dump())
    answered = OpDefinition.model_validate_json(known_fields(mine).model_dump_json())
    assert answered.webhooks[0].secret is None and answered.webhooks[0].has_secret
    assert mine.content() == answered.content()
