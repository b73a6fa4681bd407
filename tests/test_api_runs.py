"""Runs over HTTP (SPEC §2.2 to §2.5, §4): create, idempotency, read, cancel, retry, reprioritise and list.

Runs require a tag no worker has, so they stay PENDING unless ``tests.scheduling.assign_run`` plays the scheduler.
Worker events are in test_api_worker_events.py.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import httpx
from nats.aio.client import Client
from nats.js import JetStreamContext

from tests.scheduling import assign_run
from tests.test_api_definitions import NO_WORKER_TAG, definition, deploy
from tests.waiting import until


async def create_run(client: httpx.AsyncClient, name: str, expected: int = 201, **body: Any) -> dict[str, Any]:
    body.setdefault("inputs", {"text": "hello"})
    response = await client.post(f"/definitions/{name}/runs", json=body)
    assert response.status_code == expected, response.text
    result: dict[str, Any] = response.json()
    return result


async def run_keys(nc: Client) -> int:
    """How many run records KV holds (the subjects of the bucket's stream): it grows only when a run is created."""
    reply = await nc.request("$JS.API.STREAM.INFO.KV_gyoza_runs", b"", timeout=5)
    count: int = json.loads(reply.data)["state"].get("num_subjects", 0)  # omitted when 0
    return count


async def run_revision(js: JetStreamContext, run_id: str) -> int:
    entry = await (await js.key_value("gyoza_runs")).get(run_id)
    return int(entry.revision or 0)


async def adhoc_run(client: httpx.AsyncClient, expected: int = 201, **body: Any) -> dict[str, Any]:
    body.setdefault("image", "alpine:3")
    body.setdefault("tags", [NO_WORKER_TAG])
    response = await client.post("/runs", json=body)
    assert response.status_code == expected, response.text
    result: dict[str, Any] = response.json()
    return result


# --- creation ----------------------------------------------------------------------------------------------------


async def test_run_from_definition_copies_it_and_fills_defaults(client: httpx.AsyncClient, unique_name: str) -> None:
    await deploy(client, definition(unique_name, retry_policy={"max_attempts": 3}, env={"MODE": "fast"}))
    run = await create_run(client, unique_name)
    uuid.UUID(run["id"], version=4)
    assert run["object"] == "run"
    assert (run["op_definition"], run["definition_version"]) == (unique_name, "1.0.0")
    assert run["inputs"] == {"text": "hello", "top_k": 3}
    assert run["image"] == f"registry.example/{unique_name}:1.0.0"
    assert run["constraints"]["ram_mb"] == 512
    assert run["retry_policy"]["max_attempts"] == 3
    assert (run["tags"], run["env"]) == ([NO_WORKER_TAG], {"MODE": "fast"})
    assert run["output_specs"] == {"label": {"type": "string", "required": True, "description": ""}}
    assert (run["state"], run["state_reason"]["code"]) == ("PENDING", "QUEUED")
    assert (run["priority"], run["progress"], run["current_attempt"]) == (5, 0, 1)
    assert run["outputs"] == {}
    assert [e["type"] for e in run["events"]] == ["CREATED"]
    assert run["events"][0]["state"] == "PENDING"


async def test_run_pins_the_requested_version(client: httpx.AsyncClient, unique_name: str) -> None:
    await deploy(client, definition(unique_name, "1.0.0"))
    await deploy(client, definition(unique_name, "2.0.0"))
    pinned = await create_run(client, unique_name, version="1.0.0", priority=9)
    assert (pinned["definition_version"], pinned["image"]) == ("1.0.0", f"registry.example/{unique_name}:1.0.0")
    assert pinned["priority"] == 9
    latest = await create_run(client, unique_name)
    assert latest["definition_version"] == "2.0.0"

    # A later deploy does not change an existing run.
    await deploy(client, definition(unique_name, "3.0.0", image="new:3"))
    assert (await client.get(f"/runs/{latest['id']}")).json()["image"] == f"registry.example/{unique_name}:2.0.0"


async def test_run_of_unknown_definition_or_version_is_404(client: httpx.AsyncClient, unique_name: str) -> None:
    missing = await client.post(f"/definitions/{unique_name}/runs", json={"inputs": {}})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "DEFINITION_NOT_FOUND"
    await deploy(client, definition(unique_name))
    no_version = await client.post(f"/definitions/{unique_name}/runs", json={"inputs": {"text": "x"}, "version": "7"})
    assert no_version.status_code == 404
    assert no_version.json()["error"]["code"] == "DEFINITION_NOT_FOUND"


async def test_adhoc_run(client: httpx.AsyncClient, unique_name: str) -> None:
    run = await adhoc_run(
        client,
        image=f"ghcr.io/acme/{unique_name}:1",
        command=["python", "-m", "op"],
        inputs={"anything": [1, 2]},
        priority=70,
        constraints={"cpu": 2, "vram_mb": 1000},
        timeout_seconds=30,
        tags=[NO_WORKER_TAG, "gpu"],
        env={"A": "1"},
        output_specs={"score": {"type": "float"}},
        event_delivery={"topic": "results", "attributes": {"team": "ml"}},
    )
    assert run["op_definition"] is None and run["definition_version"] is None
    assert run["image"] == f"ghcr.io/acme/{unique_name}:1"
    assert run["command"] == ["python", "-m", "op"]
    assert run["inputs"] == {"anything": [1, 2]}
    assert run["priority"] == 70
    assert run["constraints"] == {"cpu": 2.0, "ram_mb": 0, "vram_mb": 1000, "gpus": 1}
    assert run["timeout_seconds"] == 30
    assert run["event_delivery"] == {"topic": "results", "attributes": {"team": "ml"}}
    assert run["state"] == "PENDING"


# --- idempotency -------------------------------------------------------------------------------------------------


async def test_idempotency_key_header_returns_the_original_run(client: httpx.AsyncClient, unique_name: str) -> None:
    await deploy(client, definition(unique_name))
    key = {"Idempotency-Key": "req-" + uuid.uuid4().hex}
    first = await client.post(f"/definitions/{unique_name}/runs", json={"inputs": {"text": "a"}}, headers=key)
    again = await client.post(f"/definitions/{unique_name}/runs", json={"inputs": {"text": "a"}}, headers=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert first.json()["idempotency_key"] == key["Idempotency-Key"]
    other = await client.post(f"/definitions/{unique_name}/runs", json={"inputs": {"text": "a"}})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


async def test_idempotency_key_field_returns_the_original_run(client: httpx.AsyncClient, nc: Client) -> None:
    key = "field-" + uuid.uuid4().hex
    first = await adhoc_run(client, idempotency_key=key)
    runs_before = await run_keys(nc)
    # The header carrying the same key as the field is the same request.
    again = await client.post(
        "/runs",
        json={"image": "alpine:3", "tags": [NO_WORKER_TAG], "idempotency_key": key},
        headers={"Idempotency-Key": key},
    )
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]
    assert await run_keys(nc) == runs_before


async def test_idempotency_header_and_field_must_agree(client: httpx.AsyncClient, unique_name: str) -> None:
    await deploy(client, definition(unique_name))
    body = {"inputs": {"text": "a"}, "idempotency_key": "one-" + uuid.uuid4().hex}
    headers = {"Idempotency-Key": "two-" + uuid.uuid4().hex}
    for path, payload in ((f"/definitions/{unique_name}/runs", body), ("/runs", {"image": "alpine:3", **body})):
        response = await client.post(path, json=payload, headers=headers)
        assert response.status_code == 400, path
        assert response.json()["error"]["details"][0]["field"] == "idempotency_key"


# --- reading -----------------------------------------------------------------------------------------------------


async def test_get_run_attempts_and_events(client: httpx.AsyncClient) -> None:
    run = await adhoc_run(client)
    got = await client.get(f"/runs/{run['id']}")
    assert got.status_code == 200
    # A scheduler may have refreshed why the run waits; everything else is as created.
    assert {**got.json(), "state_reason": None} == {**run, "state_reason": None}

    attempts = await client.get(f"/runs/{run['id']}/attempts")
    assert attempts.status_code == 200
    [attempt] = attempts.json()["data"]
    assert (attempt["number"], attempt["state"]) == (1, "PENDING")
    assert [e["type"] for e in attempt["events"]] == ["CREATED"]

    await client.post(f"/runs/{run['id']}/cancel")
    events = (await client.get(f"/runs/{run['id']}/events")).json()["data"]
    assert [(e["id"], e["type"], e["state"]) for e in events] == [
        (1, "CREATED", "PENDING"),
        (2, "CANCELLED", "CANCELLED"),
    ]
    later = (await client.get(f"/runs/{run['id']}/events", params={"after": 1})).json()["data"]
    assert [e["id"] for e in later] == [2]
    assert (await client.get(f"/runs/{run['id']}/events", params={"after": 2})).json()["data"] == []


# --- cancel, retry, reprioritise ---------------------------------------------------------------------------------


async def test_cancel_pending_run_and_repeat(client: httpx.AsyncClient, js: JetStreamContext) -> None:
    run = await adhoc_run(client)
    cancelled = await client.post(f"/runs/{run['id']}/cancel")
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert (body["state"], body["state_reason"]["code"]) == ("CANCELLED", "USER")
    assert body["finished_at"] is not None
    assert body["execution_summary"] is not None

    revision = await run_revision(js, run["id"])
    again = await client.post(f"/runs/{run['id']}/cancel")
    assert again.status_code == 200
    assert again.json()["state"] == "CANCELLED"
    assert again.json()["events"] == body["events"]  # no second CANCELLED event
    assert await run_revision(js, run["id"]) == revision  # nothing written


async def test_retry_starts_a_new_pending_attempt(client: httpx.AsyncClient, js: JetStreamContext) -> None:
    run = await adhoc_run(client)
    await client.post(f"/runs/{run['id']}/cancel")
    # last_seq, not messages: a scheduler consuming the work queue removes messages.
    requests_before = (await js.stream_info("GYOZA_RUN_REQUESTS")).state.last_seq

    retried = await client.post(f"/runs/{run['id']}/retry")
    assert retried.status_code == 200
    body = retried.json()
    assert (body["id"], body["state"], body["current_attempt"]) == (run["id"], "PENDING", 2)
    assert body["finished_at"] is None
    # The run shows the current attempt's timeline only.
    assert {e["attempt"] for e in body["events"]} == {2}
    assert [e["type"] for e in body["events"]] == ["RETRIED"]
    # The scheduler is told about the new attempt.
    assert (await js.stream_info("GYOZA_RUN_REQUESTS")).state.last_seq == requests_before + 1

    attempts = (await client.get(f"/runs/{run['id']}/attempts")).json()["data"]
    assert [(a["number"], a["state"]) for a in attempts] == [(1, "CANCELLED"), (2, "PENDING")]
    assert [e["type"] for e in attempts[0]["events"]] == ["CREATED", "CANCELLED"]


async def test_patch_priority_while_pending(client: httpx.AsyncClient) -> None:
    run = await adhoc_run(client)
    patched = await client.patch(f"/runs/{run['id']}", json={"priority": 42})
    assert patched.status_code == 200
    assert patched.json()["priority"] == 42
    assert (await client.get(f"/runs/{run['id']}")).json()["priority"] == 42


# --- listing -----------------------------------------------------------------------------------------------------


async def list_runs(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/runs", params=params)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert result["object"] == "list"
    return result


def ids(page: dict[str, Any]) -> list[str]:
    return [r["id"] for r in page["data"]]


async def test_list_is_newest_first_with_cursors(client: httpx.AsyncClient, unique_name: str) -> None:
    await deploy(client, definition(unique_name))
    created = [(await create_run(client, unique_name))["id"] for _ in range(5)]
    newest_first = created[::-1]

    first = await list_runs(client, op_definition=unique_name, limit=2)
    assert (ids(first), first["has_more"]) == (newest_first[:2], True)
    second = await list_runs(client, op_definition=unique_name, limit=2, starting_after=newest_first[1])
    assert (ids(second), second["has_more"]) == (newest_first[2:4], True)
    last = await list_runs(client, op_definition=unique_name, limit=2, starting_after=newest_first[3])
    assert (ids(last), last["has_more"]) == (newest_first[4:], False)

    # ending_before pages back towards newer runs, still shown newest first.
    back = await list_runs(client, op_definition=unique_name, limit=2, ending_before=newest_first[2])
    assert (ids(back), back["has_more"]) == (newest_first[:2], False)
    back_more = await list_runs(client, op_definition=unique_name, limit=1, ending_before=newest_first[2])
    assert (ids(back_more), back_more["has_more"]) == (newest_first[1:2], True)

    default = await list_runs(client, op_definition=unique_name)
    assert ids(default) == newest_first  # default limit 10


async def test_list_filters_by_state(client: httpx.AsyncClient, unique_name: str) -> None:
    await deploy(client, definition(unique_name))
    pending = (await create_run(client, unique_name))["id"]
    cancelled = (await create_run(client, unique_name))["id"]
    await client.post(f"/runs/{cancelled}/cancel")

    assert ids(await list_runs(client, op_definition=unique_name, state="CANCELLED")) == [cancelled]
    assert ids(await list_runs(client, op_definition=unique_name, status="pending")) == [pending]
    both = await list_runs(client, op_definition=unique_name, state="PENDING,CANCELLED")
    assert ids(both) == [cancelled, pending]
    assert ids(await list_runs(client, op_definition=unique_name, state="COMPLETED")) == []


async def test_list_filters_by_image_and_created(client: httpx.AsyncClient, unique_name: str) -> None:
    image = f"registry.example/{unique_name}:adhoc"
    runs = [await adhoc_run(client, image=image) for _ in range(3)]
    await adhoc_run(client, image=image + "-other")
    assert ids(await list_runs(client, image=image)) == [r["id"] for r in reversed(runs)]

    middle = repr(datetime.fromisoformat(runs[1]["created_at"]).timestamp())
    assert ids(await list_runs(client, image=image, **{"created[gte]": middle})) == [runs[2]["id"], runs[1]["id"]]
    assert ids(await list_runs(client, image=image, **{"created[gt]": middle})) == [runs[2]["id"]]
    assert ids(await list_runs(client, image=image, **{"created[lte]": middle})) == [runs[1]["id"], runs[0]["id"]]
    assert ids(await list_runs(client, image=image, **{"created[lt]": middle})) == [runs[0]["id"]]


async def test_list_follows_changes_written_elsewhere(client: httpx.AsyncClient, nats_url: str) -> None:
    # The scheduler's writes reach the index through the KV watch, not through this server's own requests.
    worker = "w-" + uuid.uuid4().hex[:8]
    run = await adhoc_run(client)
    await assign_run(nats_url, run["id"], worker)

    async def listed() -> bool:
        page = await list_runs(client, worker_id=worker, state="ASSIGNED")
        return ids(page) == [run["id"]]

    await until(listed, timeout=10, what="assigned run in GET /runs")
