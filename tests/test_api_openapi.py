"""The OpenAPI description matches the server (issue 15.8): what it documents is what the server does.

Walks /openapi.json: every operation documents its refusals with the error body, each documented query parameter
is accepted as documented and nothing else is, 405 says which methods are allowed, and bad values (an empty state,
NUL in strings, NaN and infinities in numbers) are 400s naming the field.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.api_checks import NoTrace, error_of, fields
from tests.processes import GyozaServer
from tests.test_api_runs import adhoc_run
from tests.test_api_worker_events import running_run

Operation = tuple[str, str, dict[str, Any]]
ERROR_BODY = "#/components/schemas/ErrorBody"


@pytest.fixture(scope="module")
async def spec(server: GyozaServer) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as http:  # no key: the description is public
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def operations(spec: dict[str, Any]) -> list[Operation]:
    return [(method.upper(), path, op) for path, item in spec["paths"].items() for method, op in item.items()]


def query_names(operation: dict[str, Any]) -> list[str]:
    return [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]


def refusals(operation: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(status): r for status, r in operation["responses"].items() if 400 <= int(status) < 500}


def test_every_operation_documents_its_refusals(spec: dict[str, Any]) -> None:
    missing = []
    for method, path, operation in operations(spec):
        documented = refusals(operation)
        expected = {400}  # any operation: an unknown or bad query parameter
        if operation.get("security") != []:
            expected.add(401)
        if "requestBody" in operation:
            expected |= {413, 415}
        if "{" in path and not path.startswith(("/workers", "/topics")):
            expected.add(404)  # an unknown run or definition (a bad worker id or topic is a 400)
        if not expected <= set(documented):
            missing.append(f"{method} {path}: {sorted(expected - set(documented))}")
        for status, response in documented.items():
            schema = response["content"]["application/json"]["schema"]
            assert schema.get("$ref") == ERROR_BODY or schema.get("title") == "ErrorBody", (method, path, status)
            assert response["description"], (method, path, status)
    assert not missing, missing
    assert len(operations(spec)) >= 25


def test_health_is_keyless_and_everything_else_needs_the_key(spec: dict[str, Any]) -> None:
    assert spec["security"] == [{"apiKey": []}]
    assert spec["components"]["securitySchemes"]["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    keyless = {(method, path) for method, path, operation in operations(spec) if operation.get("security") == []}
    assert keyless == {("GET", "/health")}


async def test_the_server_gives_only_documented_refusals(
    client: httpx.AsyncClient, server: GyozaServer, spec: dict[str, Any], nothing_written: NoTrace
) -> None:
    undocumented = []
    async with httpx.AsyncClient(base_url=server.url) as keyless, nothing_written():
        for method, path, operation in operations(spec):
            url = re.sub(r"\{\w+\}", "no-such-id", path)
            documented = refusals(operation)
            probes = [
                await keyless.request(method, url),
                await client.request(method, url, params={"bogus": "1"}),
                await client.request(method, re.sub(r"\{\w+\}", "bad%0Aid", path)),
            ]
            for response in probes:
                if response.status_code >= 400 and response.status_code not in documented:
                    undocumented.append(f"{method} {response.request.url}: {response.status_code}")
            assert "bogus" in fields(error_of(probes[1], 400)), (method, path)
    assert not undocumented, undocumented


async def test_documented_query_parameters_are_accepted(
    client: httpx.AsyncClient, spec: dict[str, Any], nats_url: str, unique_name: str
) -> None:
    run = await running_run(client, nats_url)
    worker = "w-" + uuid.uuid4().hex[:8]
    heartbeat = {"resources": {"cpu": 1, "ram_mb": 256}, "tags": ["no-such-tag-anywhere"]}
    assert (await client.post(f"/workers/{worker}/heartbeat", json=heartbeat)).status_code == 200
    ids = {"run_id": run["id"], "name": unique_name, "worker_id": worker, "topic": "some-topic", "batch_id": run["id"]}
    ids["delivery_id"] = "1-0"  # a webhook delivery: <event id>-<webhook index>
    ids["key_id"] = "0000000000000000"  # an API key id (docs/keys.md); no /keys operation takes a query
    ids["registry"] = "registry.example"  # no /secrets or /registries operation takes a query either
    examples = {
        "limit": "5", "starting_after": run["id"], "ending_before": run["id"], "state": "RUNNING",
        "status": "RUNNING,PENDING", "op_definition": unique_name, "image": "alpine:3", "topic": "some-topic",
        "worker_id": "w1", "created[gte]": "0", "created[gt]": "0", "created[lte]": "4e9", "created[lt]": "4e9",
        "after": "0", "attempt": "1", "all_versions": "true", "version": "1.0.0", "wait": "0",
        "batch_id": run["id"], "label": "team:ml", "last_event_id": "0", "heartbeat": "1", "timeout": "0.1",
    }  # fmt: skip
    seen = set()
    for method, path, operation in operations(spec):
        url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
        for name in query_names(operation):
            seen.add(name)
            content = b"logs\n" if method == "PUT" else None
            params = {name: examples[name]}
            if path.endswith("/stream"):  # a live stream of a running run: closed by its timeout
                params.setdefault("timeout", "0.1")
            response = await client.request(method, url, params=params, content=content)
            if response.status_code == 400:
                assert name not in fields(response.json()["error"]), (method, path, name, response.text)
    assert seen == set(examples), set(examples) ^ seen


async def test_created_filters_use_the_documented_brackets(client: httpx.AsyncClient, spec: dict[str, Any]) -> None:
    assert "created[gte]" in query_names(spec["paths"]["/runs"]["get"])
    run = await adhoc_run(client)
    now = time.time()
    newer = (await client.get("/runs", params={"created[gte]": now - 600, "limit": 100})).json()["data"]
    assert run["id"] in [r["id"] for r in newer]
    future = (await client.get("/runs", params={"created[gt]": now + 600})).json()["data"]
    assert future == []
    # The name the description used to show is refused, not silently ignored.
    error = error_of(await client.get("/runs", params={"created_gte": now + 600}), 400, "INVALID_REQUEST")
    assert fields(error) == {"created_gte"}


async def test_405_says_which_methods_are_allowed(client: httpx.AsyncClient) -> None:
    for method, path, allowed in (
        ("DELETE", "/runs", {"GET", "POST"}),
        ("PUT", "/health", {"GET"}),
        ("GET", "/runs/00000000-0000-4000-8000-000000000000/cancel", {"POST"}),
    ):
        response = await client.request(method, path)
        error_of(response, 405, "METHOD_NOT_ALLOWED")
        assert allowed <= {m.strip() for m in response.headers["allow"].split(",")}, response.headers


@pytest.mark.parametrize("params", [{"state": ""}, {"state": "PENDING,"}, {"status": ""}, {"state": ",RUNNING"}])
async def test_an_empty_state_is_400(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    assert fields(error_of(await client.get("/runs", params=params), 400)) == {"state"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"image": "alpine\x00:3"}, "image"),
        ({"image": "alpine:3\x00"}, "image"),
        ({"image": "alpine:3\n"}, "image"),
        ({"image": "alpine:3", "command": ["sh", "-c", "echo\x00hi"]}, "command.2"),
        ({"image": "alpine:3", "env": {"MODE": "fast\x00"}}, "env.MODE"),
    ],
)
async def test_nul_in_strings_is_400(
    client: httpx.AsyncClient, nothing_written: NoTrace, body: dict[str, Any], field: str
) -> None:
    async with nothing_written():
        response = await client.post("/runs", json=body)
    assert field in fields(error_of(response, 400, "INVALID_REQUEST"))


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400"])
async def test_non_finite_numbers_are_400(client: httpx.AsyncClient, nats_url: str, value: str) -> None:
    run = await adhoc_run(client)
    for path, name in (
        ("/runs", "created[gte]"),
        ("/runs", "created[lt]"),
        (f"/runs/{run['id']}/events", "after"),
        (f"/runs/{run['id']}/logs", "attempt"),
        ("/topics/some-topic/events", "after"),
        ("/topics/some-topic/events", "limit"),
        ("/runs", "limit"),
    ):
        response = await client.get(path, params={name: value})
        assert name in fields(error_of(response, 400)), (path, name, value)
    claim = await client.post("/workers/w-nan/claim", params={"wait": value})
    assert fields(error_of(claim, 400)) == {"wait"}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_non_finite_numbers_in_bodies_are_400(
    client: httpx.AsyncClient, nothing_written: NoTrace, number: str
) -> None:
    for field, body in (
        ("timeout_seconds", f'{{"image": "alpine:3", "timeout_seconds": {number}}}'),
        ("constraints.cpu", f'{{"image": "alpine:3", "constraints": {{"cpu": {number}}}}}'),
    ):
        async with nothing_written():
            response = await client.post("/runs", content=body, headers={"Content-Type": "application/json"})
        error = error_of(response, 400)
        assert error["code"] == "INVALID_JSON" or field in fields(error), (field, number, error)
