"""Refused state changes (SPEC §2.5): 409 naming both states, STALE_ATTEMPT for old attempts, nothing written."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api_checks import NoTrace, error_of, fields
from tests.scheduling import assign_run
from tests.test_api_runs import adhoc_run
from tests.test_api_worker_events import event


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
    # No worker holds a PENDING attempt, so no worker may report on it.
    run = await adhoc_run(client)
    async with nothing_written(run["id"]):
        for type_, msg in (("STARTED", ""), ("PROGRESS", 10), ("INFO", "hi"), ("COMPLETED", "")):
            error = error_of(await event(client, run["id"], type_, msg), 409, "STALE_ATTEMPT")
            assert "PENDING" in error["message"] and fields(error) == {"worker_id"}, type_
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
