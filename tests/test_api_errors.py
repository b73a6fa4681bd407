"""Refused requests over HTTP (SPEC §4): bad bodies, bad queries and unknown ids get the right 4xx, the uniform
error body, and change nothing in KV (the ``nothing_written`` check)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.api_checks import NoTrace, error_of, fields
from tests.test_api_definitions import NO_WORKER_TAG, definition, deploy

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
            await client.post(f"/runs/{run_id}/events", json={"attempt": 1, "worker_id": "w1", "type": "STARTED"}),
        ]
    for response in responses:
        assert response.status_code == 404, (response.request.method, response.request.url, response.text)
        assert response.json()["error"]["code"] in ("RUN_NOT_FOUND", "NOT_FOUND")


async def test_unknown_definition_is_404(client: httpx.AsyncClient, nothing_written: NoTrace, unique_name: str) -> None:
    async with nothing_written():
        error_of(await client.delete(f"/definitions/{unique_name}"), 404, "DEFINITION_NOT_FOUND")
        error_of(await client.post(f"/definitions/{unique_name}/runs", json={}), 404, "DEFINITION_NOT_FOUND")
