"""Every refused request over HTTP (SPEC §4): the right 4xx, the uniform error body, and nothing changed in KV."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from tests.processes import API_KEY, GyozaServer
from tests.scheduling import assign_run
from tests.test_api_definitions import NO_WORKER_TAG, definition, deploy
from tests.test_api_runs import adhoc_run, event, run_keys

# Streams only requests append to: any new message there is a trace. (last_seq, not messages: a scheduler consuming
# the GYOZA_RUN_REQUESTS work queue removes messages.)
APPEND_ONLY_STREAMS = ("KV_gyoza_definitions", "KV_gyoza_idempotency", "GYOZA_RUN_REQUESTS")


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The error object of a refused response, after checking the status and the uniform shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def fields(error: dict[str, Any]) -> set[str]:
    return {d["field"] for d in error["details"]}


async def run_snapshot(js: JetStreamContext, run_id: str) -> dict[str, Any]:
    """The stored run record, minus why a PENDING attempt waits (a scheduler may refresh that at any time)."""
    entry = await (await js.key_value("gyoza_runs")).get(run_id)
    record: dict[str, Any] = json.loads(entry.value or b"{}")
    for attempt in record["attempts"]:
        if attempt["state"] == "PENDING":
            attempt["state_reason"] = None
    return record


NoTrace = Callable[..., AbstractAsyncContextManager[None]]


@pytest.fixture
def nothing_written(js: JetStreamContext, nc: Client) -> NoTrace:
    """``async with nothing_written(*run_ids):`` fails when the block leaves a trace in JetStream."""
    return functools.partial(_nothing_written, js, nc)


@asynccontextmanager
async def _nothing_written(js: JetStreamContext, nc: Client, *run_ids: str) -> AsyncIterator[None]:
    """Asserts that the block stores nothing: no definition, idempotency key, run request or new run, and no change
    to the given runs."""

    async def snapshot() -> dict[str, Any]:
        state = {s: (await js.stream_info(s)).state.last_seq for s in APPEND_ONLY_STREAMS}
        state["runs"] = await run_keys(nc)
        state.update({run_id: await run_snapshot(js, run_id) for run_id in run_ids})
        return state

    before = await snapshot()
    yield
    assert await snapshot() == before


# --- body parsing ------------------------------------------------------------------------------------------------

BODY_PATHS = ("/definitions", "/runs", "/definitions/{name}/runs")


@pytest.mark.parametrize("path", BODY_PATHS)
async def test_malformed_json_is_400(client: httpx.AsyncClient, unique_name: str, path: str) -> None:
    await deploy(client, definition(unique_name))
    response = await client.post(
        path.format(name=unique_name), content=b'{"inputs": {', headers={"Content-Type": "application/json"}
    )
    error_of(response, 400, "INVALID_JSON")


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"5", b"null", b"true"])
@pytest.mark.parametrize("path", BODY_PATHS)
async def test_non_object_body_is_400(client: httpx.AsyncClient, unique_name: str, path: str, body: bytes) -> None:
    await deploy(client, definition(unique_name))
    response = await client.post(
        path.format(name=unique_name), content=body, headers={"Content-Type": "application/json"}
    )
    error_of(response, 400, "INVALID_REQUEST")


async def test_non_json_content_type_is_415(client: httpx.AsyncClient, nothing_written: NoTrace) -> None:
    async with nothing_written():
        response = await client.post("/runs", content=b"image=alpine", headers={"Content-Type": "text/plain"})
    error_of(response, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_body_over_one_mib_is_413(client: httpx.AsyncClient, unique_name: str, nothing_written: NoTrace) -> None:
    big = {"image": "alpine:3", "inputs": {"blob": "x" * (1024 * 1024)}}
    async with nothing_written():
        error_of(await client.post("/runs", json=big), 413, "PAYLOAD_TOO_LARGE")
        error_of(await client.post("/definitions", json=definition(unique_name, description="x" * 2**20)), 413)
    # Just under the limit is accepted.
    fits = {"image": "alpine:3", "tags": [NO_WORKER_TAG], "inputs": {"blob": "x" * (1024 * 1024 - 200)}}
    assert (await client.post("/runs", json=fits)).status_code == 201


# --- definitions -------------------------------------------------------------------------------------------------


async def test_definition_missing_fields_are_all_listed(client: httpx.AsyncClient, nothing_written: NoTrace) -> None:
    async with nothing_written():
        error = error_of(await client.post("/definitions", json={"description": "no name"}), 400, "INVALID_REQUEST")
    assert {"name", "version", "image"} <= fields(error)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"retry_policy": {"max_attempts": True}}, "retry_policy.max_attempts"),  # bool is not an int
        ({"constraints": {"ram_mb": "512"}}, "constraints.ram_mb"),  # a string is not an int
        ({"timeout_seconds": "30"}, "timeout_seconds"),
        ({"name": "Bad Name"}, "name"),
        ({"tags": "gpu"}, "tags"),
        ({"input_specs": {"n": {"type": "integer"}}}, "input_specs.n.type"),
        ({"input_specs": {"n": {"type": "int", "default": "three"}}}, "input_specs.n.default"),
        ({"retry_policy": {"retry_on": ["SOMETIMES"]}}, "retry_policy.retry_on.0"),
        ({"imagee": "typo:1"}, "imagee"),  # unknown fields are refused, not ignored
    ],
)
async def test_invalid_definition_is_400_naming_the_field(
    client: httpx.AsyncClient, nothing_written: NoTrace, unique_name: str, change: dict[str, Any], field: str
) -> None:
    body = {**definition(unique_name), **change}
    async with nothing_written():
        response = await client.post("/definitions", json=body)
    assert field in fields(error_of(response, 400))
    assert (await client.get(f"/definitions/{unique_name}")).status_code == 404


async def test_version_conflict_writes_nothing(
    client: httpx.AsyncClient, nothing_written: NoTrace, unique_name: str
) -> None:
    await deploy(client, definition(unique_name))
    async with nothing_written():
        error_of(await client.post("/definitions", json=definition(unique_name, tags=[])), 409, "VERSION_CONFLICT")


# --- run requests ------------------------------------------------------------------------------------------------


async def test_run_inputs_list_every_problem_at_once(
    client: httpx.AsyncClient, nothing_written: NoTrace, unique_name: str
) -> None:
    specs = {
        "text": {"type": "string"},
        "top_k": {"type": "int"},
        "limit": {"type": "int", "required": False},
        "ratio": {"type": "float", "min": 0, "max": 1, "required": False},
        "mode": {"type": "string", "choices": ["fast", "slow"], "required": False},
    }
    await deploy(client, definition(unique_name, input_specs=specs))
    inputs = {"top_k": "3", "limit": True, "ratio": 2, "mode": "medium", "colour": "red"}
    async with nothing_written():
        response = await client.post(
            f"/definitions/{unique_name}/runs", json={"inputs": inputs}, headers={"Idempotency-Key": uuid.uuid4().hex}
        )
    error = error_of(response, 400, "INVALID_INPUTS")
    problems = {d["field"]: d["problem"] for d in error["details"]}
    assert problems["inputs.text"] == "required input is missing"
    assert problems["inputs.top_k"] == "expected int, got string"
    assert problems["inputs.limit"] == "expected int, got bool"
    assert "<= 1" in problems["inputs.ratio"]
    assert "fast" in problems["inputs.mode"]
    assert problems["inputs.colour"] == "unknown input"
    assert len(error["details"]) == 6


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": {"text": "a"}, "priority": 101}, "priority"),
        ({"inputs": {"text": "a"}, "priority": -1}, "priority"),
        ({"inputs": {"text": "a"}, "priority": "5"}, "priority"),
        ({"inputs": {"text": "a"}, "priority": True}, "priority"),
        ({"inputs": ["a"]}, "inputs"),
        ({"inputs": {"text": "a"}, "image": "other:1"}, "image"),  # a definition's run cannot swap its image
        ({"inputs": {"text": "a"}, "idempotency_key": ""}, "idempotency_key"),
    ],
)
async def test_invalid_run_request_is_400(
    client: httpx.AsyncClient, nothing_written: NoTrace, unique_name: str, body: dict[str, Any], field: str
) -> None:
    await deploy(client, definition(unique_name))
    async with nothing_written():
        response = await client.post(f"/definitions/{unique_name}/runs", json=body)
    assert field in fields(error_of(response, 400))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": {}}, "image"),
        ({"image": "alpine:3", "inputs": 5}, "inputs"),
        ({"image": "alpine:3", "constraints": {"gpus": False}}, "constraints.gpus"),
        ({"image": "alpine:3", "constraints": {"ram_mb": 1.5}}, "constraints.ram_mb"),
        ({"image": "alpine:3", "env": {"A": 1}}, "env.A"),
        ({"image": "alpine:3", "event_delivery": {"topic": "no spaces"}}, "event_delivery.topic"),
        ({"image": "alpine:3", "version": "1"}, "version"),
    ],
)
async def test_invalid_adhoc_run_is_400(
    client: httpx.AsyncClient, nothing_written: NoTrace, body: dict[str, Any], field: str
) -> None:
    async with nothing_written():
        response = await client.post("/runs", json=body)
    assert field in fields(error_of(response, 400, "INVALID_REQUEST"))


async def test_bad_idempotency_header_is_400(client: httpx.AsyncClient, nothing_written: NoTrace) -> None:
    async with nothing_written():
        response = await client.post("/runs", json={"image": "alpine:3"}, headers={"Idempotency-Key": "x" * 256})
    assert fields(error_of(response, 400)) == {"Idempotency-Key"}


# --- GET /runs query ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"state": "SLEEPING"}, "state"),
        ({"status": "PENDING,NAPPING"}, "state"),
        ({"created[gte]": "yesterday"}, "created[gte]"),
        ({"created[lt]": "1e"}, "created[lt]"),
        ({"starting_after": str(uuid.uuid4())}, "starting_after"),
        ({"ending_before": str(uuid.uuid4())}, "ending_before"),
        ({"starting_after": "a", "ending_before": "b"}, "ending_before"),
        ({"sort": "asc"}, "sort"),
    ],
)
async def test_bad_list_parameters_are_400(client: httpx.AsyncClient, params: dict[str, str], field: str) -> None:
    response = await client.get("/runs", params=params)
    assert field in fields(error_of(response, 400))


async def test_bad_all_versions_flag_is_400(client: httpx.AsyncClient) -> None:
    error = error_of(await client.get("/definitions", params={"all_versions": "maybe"}), 400)
    assert fields(error) == {"all_versions"}


# --- unknown ids -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", [str(uuid.uuid4()), "not-a-run-id", "12345"])
async def test_unknown_run_is_404_everywhere(client: httpx.AsyncClient, nothing_written: NoTrace, run_id: str) -> None:
    async with nothing_written():
        responses = [
            await client.get(f"/runs/{run_id}"),
            await client.get(f"/runs/{run_id}/attempts"),
            await client.get(f"/runs/{run_id}/events"),
            await client.get(f"/runs/{run_id}/logs"),
            await client.post(f"/runs/{run_id}/cancel"),
            await client.post(f"/runs/{run_id}/retry"),
            await client.patch(f"/runs/{run_id}", json={"priority": 1}),
            await client.post(f"/runs/{run_id}/events", json={"attempt": 1, "type": "STARTED"}),
        ]
    for response in responses:
        assert response.status_code == 404, (response.request.method, response.request.url, response.text)
        assert response.json()["error"]["code"] in ("RUN_NOT_FOUND", "NOT_FOUND")


async def test_unknown_definition_is_404(client: httpx.AsyncClient, nothing_written: NoTrace, unique_name: str) -> None:
    async with nothing_written():
        error_of(await client.delete(f"/definitions/{unique_name}"), 404, "DEFINITION_NOT_FOUND")
        error_of(await client.post(f"/definitions/{unique_name}/runs", json={}), 404, "DEFINITION_NOT_FOUND")


# --- state transitions -------------------------------------------------------------------------------------------


async def test_retry_of_a_pending_run_is_409(client: httpx.AsyncClient, nothing_written: NoTrace) -> None:
    run = await adhoc_run(client)
    async with nothing_written(run["id"]):
        error = error_of(await client.post(f"/runs/{run['id']}/retry"), 409, "INVALID_TRANSITION")
    assert "PENDING" in error["message"]
    assert (await client.get(f"/runs/{run['id']}")).json()["current_attempt"] == 1


async def test_cancel_of_a_finished_run_is_409(
    client: httpx.AsyncClient, nothing_written: NoTrace, nats_url: str
) -> None:
    completed, failed = await adhoc_run(client), await adhoc_run(client)
    for run, final in ((completed, "COMPLETED"), (failed, "FAILED")):
        await assign_run(nats_url, run["id"])
        assert (await event(client, run["id"], "STARTED")).status_code == 200
        assert (await event(client, run["id"], final)).json()["state"] == final

    async with nothing_written(completed["id"], failed["id"]):
        for run, final in ((completed, "COMPLETED"), (failed, "FAILED")):
            error = error_of(await client.post(f"/runs/{run['id']}/cancel"), 409, "INVALID_TRANSITION")
            assert final in error["message"] and "CANCELLED" in error["message"]
        error = error_of(await client.post(f"/runs/{completed['id']}/retry"), 409, "INVALID_TRANSITION")
        assert "COMPLETED" in error["message"] and "PENDING" in error["message"]
        error = error_of(await client.patch(f"/runs/{failed['id']}", json={"priority": 80}), 409, "INVALID_TRANSITION")
        assert "FAILED" in error["message"] and "PENDING" in error["message"]
        # A worker cannot revive a finished run either.
        error_of(await event(client, completed["id"], "STARTED"), 409, "INVALID_TRANSITION")
        error_of(await event(client, failed["id"], "PROGRESS", 50), 409, "INVALID_TRANSITION")
    assert (await client.get(f"/runs/{failed['id']}")).json()["priority"] == 5


async def test_worker_event_for_a_pending_run_is_409(client: httpx.AsyncClient, nothing_written: NoTrace) -> None:
    run = await adhoc_run(client)
    async with nothing_written(run["id"]):
        for type_, msg in (("STARTED", ""), ("PROGRESS", 10), ("INFO", "hi"), ("COMPLETED", "")):
            error = error_of(await event(client, run["id"], type_, msg), 409, "INVALID_TRANSITION")
            assert "PENDING" in error["message"], type_
    assert (await client.get(f"/runs/{run['id']}")).json()["events"] == run["events"]


async def test_stale_attempt_is_409(client: httpx.AsyncClient, nothing_written: NoTrace, nats_url: str) -> None:
    run = await adhoc_run(client)
    await assign_run(nats_url, run["id"])
    await client.post(f"/runs/{run['id']}/cancel")
    assert (await client.post(f"/runs/{run['id']}/retry")).json()["current_attempt"] == 2

    # The worker that held attempt 1 reports late: it is fenced off.
    async with nothing_written(run["id"]):
        for type_, msg in (("STARTED", ""), ("PROGRESS", 50), ("COMPLETED", ""), ("FAILED", "")):
            error = error_of(await event(client, run["id"], type_, msg, attempt=1), 409, "STALE_ATTEMPT")
            assert fields(error) == {"attempt"}
        error_of(await event(client, run["id"], "STARTED", attempt=3), 409, "STALE_ATTEMPT")
    body = (await client.get(f"/runs/{run['id']}")).json()
    assert (body["state"], body["current_attempt"]) == ("PENDING", 2)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "STARTED"}, "attempt"),
        ({"attempt": True, "type": "STARTED"}, "attempt"),
        ({"attempt": "1", "type": "STARTED"}, "attempt"),
        ({"attempt": 1, "type": "EXPLODED"}, "type"),
        ({"attempt": 1, "type": "INFO", "colour": "red"}, "colour"),
    ],
)
async def test_malformed_worker_event_is_400(
    client: httpx.AsyncClient, nothing_written: NoTrace, body: dict[str, Any], field: str
) -> None:
    run = await adhoc_run(client)
    async with nothing_written(run["id"]):
        response = await client.post(f"/runs/{run['id']}/events", json=body)
    assert field in fields(error_of(response, 400))


async def test_patch_needs_a_valid_priority(client: httpx.AsyncClient, nothing_written: NoTrace) -> None:
    run = await adhoc_run(client)
    async with nothing_written(run["id"]):
        for body in ({}, {"priority": 101}, {"priority": "9"}, {"priority": 9, "state": "RUNNING"}):
            error_of(await client.patch(f"/runs/{run['id']}", json=body), 400)


# --- auth and meta -----------------------------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/definitions"),
    ("POST", "/definitions"),
    ("GET", "/definitions/some-op"),
    ("GET", "/definitions/some-op/versions"),
    ("DELETE", "/definitions/some-op"),
    ("POST", "/definitions/some-op/runs"),
    ("GET", "/runs"),
    ("POST", "/runs"),
    ("GET", "/runs/00000000-0000-4000-8000-000000000000"),
    ("PATCH", "/runs/00000000-0000-4000-8000-000000000000"),
    ("GET", "/runs/00000000-0000-4000-8000-000000000000/attempts"),
    ("GET", "/runs/00000000-0000-4000-8000-000000000000/events"),
    ("GET", "/runs/00000000-0000-4000-8000-000000000000/logs"),
    ("POST", "/runs/00000000-0000-4000-8000-000000000000/cancel"),
    ("POST", "/runs/00000000-0000-4000-8000-000000000000/retry"),
    ("POST", "/runs/00000000-0000-4000-8000-000000000000/events"),
    ("GET", "/topics/results/events"),
    ("GET", "/no-such-endpoint"),
]


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}], ids=["missing", "wrong", "empty"])
async def test_every_endpoint_but_health_needs_the_key(
    server: GyozaServer, nothing_written: NoTrace, headers: dict[str, str]
) -> None:
    body = {"image": "alpine:3", "name": "some-op", "version": "1"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as anonymous, nothing_written():
        for method, path in PROTECTED:
            response = await anonymous.request(method, path, json=body if method in ("POST", "PATCH") else None)
            error_of(response, 401, "UNAUTHORIZED")
        assert (await anonymous.get("/health")).status_code == 200


async def test_early_refusals_keep_the_connection_usable(server: GyozaServer) -> None:
    # A refusal sent before the request body was read (401 from the auth check, 404 from routing) must not break
    # the keep-alive connection that SDK clients reuse for their next request.
    async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=1)) as http:
        for _ in range(50):
            error_of(await http.post("/runs", json={"image": "alpine:3"}), 401, "UNAUTHORIZED")
            refused = await http.post("/no-such-endpoint", json={"a": 1}, headers={"X-API-Key": API_KEY})
            error_of(refused, 404, "NOT_FOUND")
            assert (await http.get("/health")).status_code == 200


async def test_openapi_lists_the_main_paths(server: GyozaServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        spec = await http.get("/openapi.json")
        docs = await http.get("/docs")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in (
        "/definitions",
        "/definitions/{name}",
        "/definitions/{name}/versions",
        "/definitions/{name}/runs",
        "/runs",
        "/runs/{run_id}",
        "/runs/{run_id}/attempts",
        "/runs/{run_id}/events",
        "/runs/{run_id}/cancel",
        "/runs/{run_id}/retry",
    ):
        assert path in paths, path
    assert {"get", "patch"} <= set(paths["/runs/{run_id}"])
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text
