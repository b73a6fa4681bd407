"""The worker fence (SPEC §3.3, issue 15.4): only the worker holding an attempt may write it, events and logs alike.

A report must name its worker (400 otherwise); a report from any other worker, or for an attempt no worker holds,
is 409 STALE_ATTEMPT and changes nothing, so a forged COMPLETED cannot finish a run that runs elsewhere.
"""

from __future__ import annotations

import httpx
import pytest

from tests.api_checks import NoTrace, error_of, fields
from tests.scheduling import assign_run
from tests.test_api_runs import adhoc_run
from tests.test_api_worker_events import event, running_run


async def test_a_report_must_name_its_worker(
    client: httpx.AsyncClient, nothing_written: NoTrace, nats_url: str
) -> None:
    run = await running_run(client, nats_url)
    forged = {"attempt": 1, "type": "COMPLETED", "payload": {"outputs": {"answer": "made up"}}}
    async with nothing_written(run["id"]):
        error = error_of(await client.post(f"/runs/{run['id']}/events", json=forged), 400, "INVALID_REQUEST")
        assert fields(error) == {"worker_id"}
        for bad in ("", "w1\n", "w1.x", "*", None, 7):
            response = await client.post(f"/runs/{run['id']}/events", json={**forged, "worker_id": bad})
            assert fields(error_of(response, 400)) == {"worker_id"}, bad


async def test_a_forged_completion_from_another_worker_is_fenced_off(
    client: httpx.AsyncClient, nothing_written: NoTrace, nats_url: str
) -> None:
    run = await running_run(client, nats_url)  # RUNNING on w1
    async with nothing_written(run["id"]):
        for type_, msg in (("COMPLETED", ""), ("FAILED", "boom"), ("PROGRESS", 99), ("INFO", "hi"), ("CANCELLED", "")):
            response = await event(client, run["id"], type_, msg, worker_id="w-forger", outputs={"answer": "forged"})
            error = error_of(response, 409, "STALE_ATTEMPT")
            assert "w1" in error["message"] and "w-forger" in error["message"], type_
            assert fields(error) == {"worker_id"}

    # The real worker's report is still taken as it is.
    done = await event(client, run["id"], "COMPLETED", outputs={"answer": "real"})
    assert done.status_code == 200, done.text
    assert (done.json()["state"], done.json()["outputs"]) == ("COMPLETED", {"answer": "real"})


async def test_a_pending_attempt_belongs_to_no_worker(
    client: httpx.AsyncClient, nothing_written: NoTrace, nats_url: str
) -> None:
    # Assigned to w1, then unassigned (w1 evicted): w1's late STARTED finds the attempt back in the queue.
    run = await adhoc_run(client)
    await assign_run(nats_url, run["id"], "w1")
    given_back = await event(client, run["id"], "UNASSIGNED", "worker shutting down")
    assert given_back.json()["state"] == "PENDING"
    async with nothing_written(run["id"]):
        error = error_of(await event(client, run["id"], "STARTED"), 409, "STALE_ATTEMPT")
        assert "PENDING" in error["message"] and "no worker" in error["message"]
        # Repeating the give-back whose answer it missed changes nothing and is no error.
        again = await event(client, run["id"], "UNASSIGNED", "worker shutting down")
        assert again.status_code == 200 and again.json()["state"] == "PENDING"


async def logs_of(client: httpx.AsyncClient, run_id: str) -> str:
    response = await client.get(f"/runs/{run_id}/logs")
    assert response.status_code == 200, response.text
    return response.text


@pytest.mark.parametrize("worker", [None, "w-forger", "w1\n"], ids=["missing", "other", "newline"])
async def test_only_the_holder_uploads_logs(
    client: httpx.AsyncClient, nothing_written: NoTrace, nats_url: str, worker: str | None
) -> None:
    run = await running_run(client, nats_url)
    logs = f"/runs/{run['id']}/logs"
    stored = await client.put(logs, params={"attempt": 1, "worker_id": "w1"}, content=b"epoch 1: loss 0.3\n")
    assert stored.status_code == 204, stored.text

    params: dict[str, str | int] = {"attempt": 1} if worker is None else {"attempt": 1, "worker_id": worker}
    async with nothing_written(run["id"]):
        refused = await client.put(logs, params=params, content=b"forged logs\n")
    error = error_of(refused, 409, "STALE_ATTEMPT") if worker == "w-forger" else error_of(refused, 400)
    assert fields(error) == {"worker_id"}
    assert await logs_of(client, run["id"]) == "epoch 1: loss 0.3\n"


async def test_logs_of_an_attempt_no_longer_current_are_refused(client: httpx.AsyncClient, nats_url: str) -> None:
    run = await running_run(client, nats_url)
    assert (await event(client, run["id"], "FAILED", reason="EXIT_CODE", exit_code=1)).status_code == 200
    assert (await client.post(f"/runs/{run['id']}/retry")).json()["current_attempt"] == 2
    late = await client.put(f"/runs/{run['id']}/logs", params={"attempt": 1, "worker_id": "w1"}, content=b"late\n")
    assert fields(error_of(late, 409, "STALE_ATTEMPT")) == {"attempt"}
