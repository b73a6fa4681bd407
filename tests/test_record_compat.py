"""Rolling upgrades: records a newer server wrote survive an older one (issue 9 item 2).

A newer server may store fields this one does not know, at any level of a record. Every compare-and-set rewrite here
must keep them, byte for byte, and the API must not show them (its answers match this server's OpenAPI). A record
of a newer major ``schema_version`` is refused with 503 RECORD_TOO_NEW and left as it is.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from gyoza.schema import SCHEMA_VERSION
from gyoza.services.definitions import version_key
from tests.scheduling import assign_run
from tests.test_api_definitions import NO_WORKER_TAG
from tests.test_api_runs import adhoc_run
from tests.test_api_worker_events import event
from tests.waiting import until

# What a newer server might have written: one unknown field at each level of a run record.
FUTURE = {"added_in": "v9", "nested": {"kept": [1, 2, {"deep": True}]}}


def _future(tag: str) -> dict[str, Any]:
    return {f"future_{tag}": FUTURE}


async def _read(kv: KeyValue, key: str) -> tuple[dict[str, Any], int]:
    entry = await kv.get(key)
    assert entry.value is not None
    return json.loads(entry.value), int(entry.revision or 0)


async def _rewrite(kv: KeyValue, key: str, change: Callable[[dict[str, Any]], None]) -> tuple[bytes, int]:
    """Change a stored record as another server would: by compare-and-set, again when someone wrote first."""
    while True:
        record, revision = await _read(kv, key)
        change(record)
        raw = json.dumps(record).encode()
        try:
            return raw, await kv.update(key, raw, last=revision)
        except KeyWrongLastSequenceError:
            continue


def _add_future_fields(record: dict[str, Any]) -> None:
    record |= _future("top")
    record["attempts"][0] |= _future("attempt")
    record["events"][0] |= _future("event")
    for part in ("constraints", "retry_policy", "event_delivery"):
        record[part] |= _future(part)
    record["output_specs"]["label"] |= _future("output_spec")


def _assert_future_fields_kept(record: dict[str, Any]) -> None:
    assert record["future_top"] == FUTURE
    assert record["attempts"][0]["future_attempt"] == FUTURE
    assert record["events"][0]["future_event"] == FUTURE
    for part in ("constraints", "retry_policy", "event_delivery"):
        assert record[part][f"future_{part}"] == FUTURE, part
    assert record["output_specs"]["label"]["future_output_spec"] == FUTURE


def _assert_none_shown(body: Any) -> None:
    assert "future_" not in json.dumps(body), body


async def _settled(kv: KeyValue, run_id: str) -> dict[str, Any]:
    """The record once its last write landed (the topic outbox publishes without writing the record)."""

    async def published() -> dict[str, Any] | None:
        record, _ = await _read(kv, run_id)
        return record if record["attempts"][-1]["state"] == "COMPLETED" else None

    return await until(published, what="the run completed")


async def test_unknown_fields_survive_a_full_lifecycle(
    client: httpx.AsyncClient, js: JetStreamContext, nats_url: str, unique_name: str
) -> None:
    kv = await js.key_value("gyoza_runs")
    run = await adhoc_run(
        client,
        constraints={"cpu": 0.5},
        retry_policy={"max_attempts": 3, "retry_on": ["EXIT_CODE"]},
        output_specs={"label": {"type": "string"}},
        event_delivery={"topic": unique_name},
    )
    run_id = run["id"]
    await _rewrite(kv, run_id, _add_future_fields)

    cancelled = await client.post(f"/runs/{run_id}/cancel")  # PENDING -> CANCELLED
    assert cancelled.status_code == 200, cancelled.text
    retried = await client.post(f"/runs/{run_id}/retry")  # attempt 2
    assert retried.status_code == 200, retried.text
    assert (await client.patch(f"/runs/{run_id}", json={"priority": 9})).status_code == 200
    await assign_run(nats_url, run_id)
    for type_, msg, payload in (
        ("STARTED", "up", {}),
        ("PROGRESS", 50, {}),
        ("INFO", "halfway", {}),
        ("FAILED", "boom", {"reason": "EXIT_CODE", "exit_code": 3}),  # retried automatically: attempt 3
    ):
        answer = await event(client, run_id, type_, msg, attempt=2, **payload)
        assert answer.status_code == 200, answer.text
    await assign_run(nats_url, run_id, "w2")
    for type_, payload in (("STARTED", {}), ("COMPLETED", {"outputs": {"label": "cat"}})):
        answer = await event(client, run_id, type_, attempt=3, worker_id="w2", **payload)
        assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "COMPLETED"

    record = await _settled(kv, run_id)
    assert [a["state"] for a in record["attempts"]] == ["CANCELLED", "FAILED", "COMPLETED"]
    _assert_future_fields_kept(record)

    # The views show what this version knows, and nothing else.
    for path in (f"/runs/{run_id}", f"/runs/{run_id}/attempts", f"/runs/{run_id}/events", "/runs?limit=100"):
        answer = await client.get(path)
        assert answer.status_code == 200, (path, answer.text)
        _assert_none_shown(answer.json())
    topic = (await client.get(f"/topics/{unique_name}/events")).json()
    assert [e["type"] for e in topic["data"]][-1] == "COMPLETED"


async def test_a_definition_with_unknown_fields_passes_them_to_its_runs(
    client: httpx.AsyncClient, js: JetStreamContext, unique_name: str
) -> None:
    kv = await js.key_value("gyoza_definitions")
    now = datetime.now(UTC).isoformat()
    definition = {
        "id": unique_name, "name": unique_name, "version": "1", "image": "alpine:3", "created_at": now,
        "tags": [NO_WORKER_TAG], "constraints": {"cpu": 1, "ram_mb": 64} | _future("constraints"),
        "retry_policy": {"max_attempts": 2} | _future("retry_policy"), **_future("top"),
    }  # fmt: skip
    revision = await kv.create(version_key(unique_name, "1"), json.dumps(definition).encode())
    pointer = {"name": unique_name, "versions": [{"version": "1", "created_at": now, "revision": revision}]}
    await kv.create(unique_name, json.dumps(pointer).encode())

    shown = await client.get(f"/definitions/{unique_name}")
    assert shown.status_code == 200, shown.text
    _assert_none_shown(shown.json())
    created = await client.post(f"/definitions/{unique_name}/runs", json={"constraints": {"cpu": 2}})
    assert created.status_code == 201, created.text
    _assert_none_shown(created.json())
    assert created.json()["constraints"] == {"cpu": 2, "ram_mb": 64, "vram_mb": 0, "gpus": 0}

    record, _ = await _read(await js.key_value("gyoza_runs"), created.json()["id"])
    assert record["constraints"]["future_constraints"] == FUTURE
    assert record["retry_policy"]["future_retry_policy"] == FUTURE
    assert "future_top" not in record  # a definition's own fields are not a run's
    # Re-posting the version as this server knows it is an identical re-post, not a conflict.
    repost = {k: v for k, v in definition.items() if k in ("name", "version", "image", "tags")}
    repost |= {"constraints": {"cpu": 1, "ram_mb": 64}, "retry_policy": {"max_attempts": 2}}
    again = await client.post("/definitions", json=repost)
    assert again.status_code == 200, again.text


async def test_a_record_of_a_newer_major_version_is_refused_and_left_alone(
    client: httpx.AsyncClient, js: JetStreamContext
) -> None:
    kv = await js.key_value("gyoza_runs")
    run_id = (await adhoc_run(client))["id"]
    newer = {"schema_version": SCHEMA_VERSION + 1, "layout": "something this server would misread"}
    raw, revision = await _rewrite(kv, run_id, lambda record: record.update(newer))
    try:
        for method, path in (("GET", f"/runs/{run_id}"), ("POST", f"/runs/{run_id}/cancel")):
            answer = await client.request(method, path)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.headers["Retry-After"] == "1"
            error = answer.json()["error"]
            assert error["code"] == "RECORD_TOO_NEW"
            assert f"schema version {SCHEMA_VERSION + 1}" in error["message"] and run_id in error["message"]
        entry = await kv.get(run_id)
        assert (entry.value, entry.revision) == (raw, revision)  # not rewritten
        # The server goes on serving other records.
        assert (await client.get(f"/runs/{(await adhoc_run(client))['id']}")).status_code == 200
    finally:
        await kv.delete(run_id)


async def test_an_unknown_nested_field_in_a_body_is_still_refused(client: httpx.AsyncClient) -> None:
    body = {"image": "alpine:3", "tags": [NO_WORKER_TAG], "constraints": {"cpu": 1, "disk_mb": 5}}
    answer = await client.post("/runs", json=body | {"idempotency_key": str(uuid.uuid4())})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["details"] == [
        {"field": "constraints.disk_mb", "problem": "Extra inputs are not permitted"}
    ]
