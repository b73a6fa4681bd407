"""Retention (issue 12.5): a finished run's writes carry its retention as JetStream TTL, so the store itself removes
the run when it is over; every server hears of it, drops it from GET /runs, and the leader deletes its logs."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from tests.api_checks import NoTrace, error_of, fields
from tests.test_api_definitions import definition, deploy
from tests.test_api_run_deletion import create, logs_left, seed_logs
from tests.waiting import until

# The expiries below are a few seconds: each wait allows this much.
EXPIRY_WAIT_S = 20.0


async def cancelled(client: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    run = await create(client, **extra)
    response = await client.post(f"/runs/{run['id']}/cancel")
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


async def no_logs(js: JetStreamContext, run_id: str) -> bool:
    return await logs_left(js, run_id) == []


async def gone(client: httpx.AsyncClient, run_id: str) -> None:
    async def missing() -> bool:
        return (await client.get(f"/runs/{run_id}")).status_code == 404

    await until(missing, timeout=EXPIRY_WAIT_S, interval=0.2, what=f"run {run_id} expires")


async def test_a_finished_run_expires_with_its_logs_when_its_retention_is_over(
    client: httpx.AsyncClient, js: JetStreamContext
) -> None:
    key, label = f"order-{uuid.uuid4()}", uuid.uuid4().hex
    run = await create(client, idempotency_key=key, labels={"case": label}, retention={"cancelled": "2s"})
    assert (run["retention"], run["expires_at"]) == ({"completed": None, "failed": None, "cancelled": "2s"}, None)
    await seed_logs(js, run["id"])
    view = (await client.post(f"/runs/{run['id']}/cancel")).json()
    finished = datetime.fromisoformat(view["finished_at"])
    assert datetime.fromisoformat(view["expires_at"]) == finished + timedelta(seconds=2)
    assert (await client.get(f"/runs/{run['id']}")).json()["expires_at"] == view["expires_at"]

    await gone(client, run["id"])
    listed = await client.get("/runs", params={"label": f"case:{label}"})
    assert listed.json()["data"] == []
    await until(lambda: no_logs(js, run["id"]), timeout=EXPIRY_WAIT_S, interval=0.2, what="its logs are deleted")

    again = await client.post("/runs", json={"image": "alpine:3", "idempotency_key": key})
    assert again.status_code == 201, again.text  # the key's run is gone: a new run, as after a DELETE
    assert again.json()["state"] == "PENDING"


async def test_a_retry_before_the_expiry_keeps_the_run(client: httpx.AsyncClient) -> None:
    retried = await cancelled(client, retention={"cancelled": "2s"})
    assert retried["expires_at"] is not None
    again = await client.post(f"/runs/{retried['id']}/retry")
    assert again.status_code == 200, again.text
    assert (again.json()["state"], again.json()["expires_at"]) == ("PENDING", None)
    # Finished later with the same retention, the probe expires after the retried run would have.
    probe = await cancelled(client, retention={"cancelled": "2s"})
    await gone(client, probe["id"])
    kept = await client.get(f"/runs/{retried['id']}")
    assert (kept.status_code, kept.json()["state"]) == (200, "PENDING")


async def test_a_run_overrides_its_definitions_retention_field_by_field(
    client: httpx.AsyncClient, unique_name: str
) -> None:
    await deploy(client, definition(unique_name, retention={"completed": "7d", "cancelled": "2s"}))
    stored = (await client.get(f"/definitions/{unique_name}")).json()
    assert stored["retention"] == {"completed": "7d", "failed": None, "cancelled": "2s"}
    response = await client.post(
        f"/definitions/{unique_name}/runs", json={"inputs": {"text": "hi"}, "retention": {"cancelled": "forever"}}
    )
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["retention"] == {"completed": "7d", "failed": None, "cancelled": "forever"}
    view = (await client.post(f"/runs/{run['id']}/cancel")).json()
    assert view["expires_at"] is None  # "forever" wins over the definition's 2 s and any server default


@pytest.mark.parametrize(
    ("retention", "field"),
    [
        ({"completed": "7 days"}, "retention.completed"),
        ({"failed": "0s"}, "retention.failed"),
        ({"cancelled": 30}, "retention.cancelled"),
        ({"running": "1d"}, "retention.running"),
        ("7d", "retention"),
    ],
)
async def test_a_bad_retention_is_400_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient, nothing_written: NoTrace, unique_name: str, retention: Any, field: str
) -> None:
    run = await create(client)
    async with nothing_written(run["id"]):
        refused = await client.post("/runs", json={"image": "alpine:3", "retention": retention})
        deployed = await client.post("/definitions", json=definition(unique_name, retention=retention))
    assert fields(error_of(refused, 400)) == {field}
    assert fields(error_of(deployed, 400)) == {field}
    error_of(await client.get(f"/definitions/{unique_name}"), 404)
