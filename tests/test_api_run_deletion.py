"""Deleting finished runs (issue 12.5): DELETE /runs/{id} and POST /runs/purge remove a run with its logs and release
its idempotency key; an active run is refused with 409 and left exactly as it was."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import nats.js.errors
import pytest
from nats.js import JetStreamContext

from tests.api_checks import NoTrace, error_of, fields
from tests.test_api_batches import adhoc, batch
from tests.test_api_definitions import NO_WORKER_TAG


async def create(client: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    response = await client.post("/runs", json={"image": "alpine:3", "tags": [NO_WORKER_TAG], **extra})
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


async def seed_logs(js: JetStreamContext, run_id: str) -> None:
    """What a worker leaves of attempt 1: its captured log and a live log line."""
    await (await js.object_store("gyoza_logs")).put(f"{run_id}/1", b"captured output\n")
    await js.publish(f"gyoza.logs.{run_id}.1", b"a live line")


async def logs_left(js: JetStreamContext, run_id: str) -> list[str]:
    left = []
    try:
        await (await js.object_store("gyoza_logs")).get(f"{run_id}/1")
        left.append("object")
    except nats.js.errors.ObjectNotFoundError:
        pass
    try:
        await js.get_last_msg("GYOZA_LOGS", f"gyoza.logs.{run_id}.1")
        left.append("live lines")
    except nats.js.errors.NotFoundError:
        pass
    return left


async def test_a_finished_run_is_deleted_with_its_logs_and_its_key_released(
    client: httpx.AsyncClient, js: JetStreamContext, nothing_written: NoTrace
) -> None:
    key = f"order-{uuid.uuid4()}"
    run = await create(client, idempotency_key=key, labels={"case": key})
    await seed_logs(js, run["id"])

    async with nothing_written(run["id"]):
        active = await client.delete(f"/runs/{run['id']}")
    error = error_of(active, 409, "INVALID_TRANSITION")
    assert "PENDING" in error["message"] and fields(error) == {"state"}
    assert await logs_left(js, run["id"]) == ["object", "live lines"]  # a refused delete removes nothing

    assert (await client.post(f"/runs/{run['id']}/cancel")).status_code == 200
    deleted = await client.delete(f"/runs/{run['id']}")
    assert deleted.status_code == 204, deleted.text
    error_of(await client.get(f"/runs/{run['id']}"), 404, "RUN_NOT_FOUND")
    assert (await client.get("/runs", params={"label": f"case:{key}"})).json()["data"] == []
    assert await logs_left(js, run["id"]) == []
    error_of(await client.delete(f"/runs/{run['id']}"), 404, "RUN_NOT_FOUND")

    again = await create(client, idempotency_key=key)  # the key names no run any more: a new one
    assert again["id"] != run["id"] and again["state"] == "PENDING"


async def test_purge_deletes_the_finished_runs_a_filter_matches(
    client: httpx.AsyncClient, nothing_written: NoTrace
) -> None:
    created = await batch(client, [adhoc(n) for n in range(6)])
    batch_id, runs = created["batch_id"], created["data"]
    for run in runs[:4]:
        assert (await client.post(f"/runs/{run['id']}/cancel")).status_code == 200

    purged = await client.post("/runs/purge", json={"batch_id": batch_id})
    assert purged.status_code == 200, purged.text
    assert purged.json() == {"matched": 6, "changed": 4}
    view = (await client.get(f"/batches/{batch_id}")).json()
    assert (view["total"], view["counts"]["PENDING"]) == (2, 2)
    for run in runs[:4]:
        error_of(await client.get(f"/runs/{run['id']}"), 404)
    again = await client.post("/runs/purge", json={"batch_id": batch_id})
    assert again.json() == {"matched": 2, "changed": 0}


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "body"), ({"state": ["DONE"]}, "state.0"), ({"labels": "x"}, "labels"), ({"batch_id": 3}, "batch_id")],
)
async def test_a_purge_without_a_valid_filter_is_400_and_deletes_nothing(
    client: httpx.AsyncClient, nothing_written: NoTrace, body: dict[str, Any], field: str
) -> None:
    run = await create(client)
    assert (await client.post(f"/runs/{run['id']}/cancel")).status_code == 200
    async with nothing_written(run["id"]):
        response = await client.post("/runs/purge", json=body)
    assert fields(error_of(response, 400)) == {field}
    assert (await client.get(f"/runs/{run['id']}")).status_code == 200


async def test_an_id_that_names_no_run_is_404_as_for_get(client: httpx.AsyncClient) -> None:
    for run_id in ("not-a-uuid", str(uuid.uuid4())):
        error_of(await client.delete(f"/runs/{run_id}"), 404, "RUN_NOT_FOUND")
