"""Every path parameter of every operation against ids with control characters (issue 15.5).

Ids reach NATS subjects and KV keys, where a newline, NUL, space, ``.``, ``*`` or ``>`` breaks the subject or
means a wildcard. Each operation of /openapi.json gets such ids, built on a real id so that only the suffix is
wrong (``re.match`` with ``$`` lets "id\\n" through): always a 4xx, never a 2xx or a 500, and nothing changes.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from tests.api_checks import NoTrace
from tests.test_api_definitions import definition, deploy
from tests.test_api_worker_events import running_run

SUFFIXES = ("%0A", "%00", "%0D", "%09", "%20", ".", "*", ">", ".x", "%0Ax", "%2A", "%3E")
ALONE = ("%0A", "%00", "%20", "*", ">")
HEARTBEAT = {"resources": {"cpu": 1, "ram_mb": 256}, "tags": ["no-such-tag-anywhere"]}


def bad_values(good: str) -> list[str]:
    return [good + suffix for suffix in SUFFIXES] + list(ALONE)


async def worker_keys(js: JetStreamContext) -> set[str]:
    """The registered workers (never none here: the ``real_ids`` fixture registers one)."""
    return set(await (await js.key_value("gyoza_workers")).keys())


@pytest.fixture
async def real_ids(client: httpx.AsyncClient, nats_url: str, unique_name: str) -> dict[str, str]:
    """A real value for each path parameter: a RUNNING run (on w1), a deployed definition, a worker, a topic."""
    await deploy(client, definition(unique_name))
    run = await running_run(client, nats_url)
    worker = "fence-" + uuid.uuid4().hex[:8]
    assert (await client.post(f"/workers/{worker}/heartbeat", json=HEARTBEAT)).status_code == 200
    batch = await client.post(f"/definitions/{unique_name}/runs/batch", json={"runs": [{"inputs": {"text": "b"}}]})
    assert batch.status_code == 201, batch.text
    ids = {"run_id": run["id"], "name": unique_name, "worker_id": worker, "topic": "some-topic"}
    key = await client.post("/keys", json={"name": "path-params", "role": "read"})  # an API key (docs/keys.md)
    assert key.status_code == 201, key.text
    ids |= {"batch_id": batch.json()["batch_id"], "delivery_id": "1-0", "key_id": key.json()["id"]}
    return ids | {"registry": "localhost:5000"}  # /secrets/{name} and /registries/{registry} (docs/secrets.md)


def request_for(method: str, path: str) -> dict[str, Any]:
    """A body (and query) that is valid for the operation, so that only the id is wrong."""
    if path.endswith("/heartbeat"):
        return {"json": HEARTBEAT}
    if path == "/runs/{run_id}/events":
        return {"json": {"attempt": 1, "worker_id": "w1", "type": "INFO", "msg": "hello"}}
    if path == "/runs/{run_id}/logs" and method == "PUT":
        return {"params": {"attempt": 1, "worker_id": "w1"}, "content": b"logs\n"}
    if method == "PATCH":
        return {"json": {"priority": 7}}
    if path == "/secrets/{name}":
        return {"json": {"value": "walked"}} if method == "PUT" else {}
    if path == "/registries/{registry}":
        return {"json": {"username": "walker", "password": "walked"}} if method == "PUT" else {}
    if path == "/definitions/{name}/runs":
        return {"json": {"inputs": {"text": "hello"}}}
    if path == "/definitions/{name}/runs/batch":
        return {"json": {"runs": [{"inputs": {"text": "hello"}}]}}
    return {}


async def test_every_path_parameter_refuses_control_characters(
    client: httpx.AsyncClient, nothing_written: NoTrace, js: JetStreamContext, real_ids: dict[str, str]
) -> None:
    spec = (await client.get("/openapi.json")).json()
    operations = [(m.upper(), p) for p, item in spec["paths"].items() if "{" in p for m in item]
    assert len(operations) >= 15, operations
    workers_before = await worker_keys(js)
    answers: list[tuple[str, str, int]] = []
    async with nothing_written(real_ids["run_id"]):
        for method, template in operations:
            params = re.findall(r"\{(\w+)\}", template)
            for param in params:  # one bad id at a time, the others real
                others = template
                for other in params:
                    if other != param:
                        others = others.replace("{" + other + "}", real_ids[other])
                for value in bad_values(real_ids[param]):
                    url = others.replace("{" + param + "}", value)
                    response = await client.request(method, url, **request_for(method, template))
                    answers.append((method, url, response.status_code))
    wrong = [answer for answer in answers if answer[2] not in (400, 404)]
    assert not wrong, f"expected 400 or 404 for every bad id: {wrong}"
    assert await worker_keys(js) == workers_before
    # The real resources are untouched (a DELETE of "name\n" must not have deleted "name").
    assert (await client.get(f"/definitions/{real_ids['name']}")).status_code == 200
    assert (await client.get(f"/runs/{real_ids['run_id']}/logs")).text == ""


async def test_the_docs_assets_refuse_them_too(client: httpx.AsyncClient) -> None:
    for value in bad_values("swagger-ui.css"):
        assert (await client.get(f"/docs/assets/{value}")).status_code == 404, value
