"""Worker events over HTTP (SPEC §2.3, §2.5, §4 POST /runs/{id}/events) against the shared server.

There is no scheduler placing these runs (they require a tag no worker has), so ``tests.scheduling.assign_run``
plays its part, then each test reports events as a worker would.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.scheduling import assign_run
from tests.test_api_runs import adhoc_run


async def event(
    client: httpx.AsyncClient,
    run_id: str,
    type_: str,
    msg: str | int = "",
    attempt: int = 1,
    worker_id: str = "w1",
    **payload: Any,
) -> httpx.Response:
    """A report of the worker ``worker_id`` (``assign_run``'s default worker unless told otherwise)."""
    body = {"attempt": attempt, "worker_id": worker_id, "type": type_, "msg": msg, "payload": payload}
    return await client.post(f"/runs/{run_id}/events", json=body)


async def running_run(client: httpx.AsyncClient, nats_url: str, **body: Any) -> dict[str, Any]:
    """An ad hoc run a worker has started."""
    run = await adhoc_run(client, **body)
    await assign_run(nats_url, run["id"])
    started = await event(client, run["id"], "STARTED", "container up")
    assert started.status_code == 200, started.text
    result: dict[str, Any] = started.json()
    return result


async def test_assigned_then_started_is_running(client: httpx.AsyncClient, nats_url: str) -> None:
    run = await adhoc_run(client)
    await assign_run(nats_url, run["id"], "w1")
    assigned = (await client.get(f"/runs/{run['id']}")).json()
    assert (assigned["state"], assigned["worker_id"]) == ("ASSIGNED", "w1")

    started = await event(client, run["id"], "STARTED", "container up")
    assert started.status_code == 200
    body = started.json()
    assert (body["state"], body["state_reason"]["code"]) == ("RUNNING", "RUNNING")
    assert body["started_at"] is not None
    assert [e["type"] for e in body["events"]] == ["CREATED", "ASSIGNED", "STARTED"]
    assert body["events"][-1]["state"] == "RUNNING"


async def test_progress_and_info(client: httpx.AsyncClient, nats_url: str) -> None:
    run = await running_run(client, nats_url)
    progress = await event(client, run["id"], "PROGRESS", 40)
    assert progress.status_code == 200
    assert progress.json()["progress"] == 40
    info = await event(client, run["id"], "INFO", "model loaded", step="load")
    assert info.status_code == 200
    last = info.json()["events"][-1]
    assert (last["type"], last["msg"], last["payload"]) == ("INFO", "model loaded", {"step": "load"})
    assert info.json()["progress"] == 40

    for bad in ("half", 101, -1):
        refused = await event(client, run["id"], "PROGRESS", bad)
        assert refused.status_code == 400, bad
        assert refused.json()["error"]["details"][0]["field"] == "msg"
    assert (await client.get(f"/runs/{run['id']}")).json()["progress"] == 40


async def test_completed_with_valid_outputs(client: httpx.AsyncClient, nats_url: str) -> None:
    run = await running_run(client, nats_url, output_specs={"label": {"type": "string"}, "score": {"type": "float"}})
    done = await event(client, run["id"], "COMPLETED", outputs={"label": "cat", "score": 1})
    assert done.status_code == 200
    body = done.json()
    assert (body["state"], body["state_reason"]["code"]) == ("COMPLETED", "SUCCEEDED")
    assert body["outputs"] == {"label": "cat", "score": 1}
    assert body["progress"] == 100
    assert body["finished_at"] is not None
    assert body["execution_summary"]["worker_id"] == "w1"
    assert body["execution_summary"]["exit_code"] == 0


async def test_outputs_breaking_the_specs_fail_the_run(client: httpx.AsyncClient, nats_url: str) -> None:
    specs = {"label": {"type": "string"}, "score": {"type": "float", "required": False}}
    invalid = await running_run(client, nats_url, output_specs=specs)
    response = await event(client, invalid["id"], "COMPLETED", outputs={"label": 7})
    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["state_reason"]["code"]) == ("FAILED", "OUTPUT_INVALID")
    assert "outputs.label" in body["state_reason"]["message"]
    assert body["outputs"] == {}

    missing = await running_run(client, nats_url, output_specs=specs)
    body = (await event(client, missing["id"], "COMPLETED", outputs={"score": 0.5})).json()
    assert (body["state"], body["state_reason"]["code"]) == ("FAILED", "OUTPUT_MISSING")
    assert "outputs.label" in body["state_reason"]["message"]


async def test_failed_event_carries_the_reason(client: httpx.AsyncClient, nats_url: str) -> None:
    run = await running_run(client, nats_url)
    failed = await event(client, run["id"], "FAILED", "", reason="OOM_KILLED", exit_code=137, error="out of memory")
    assert failed.status_code == 200
    body = failed.json()
    assert (body["state"], body["state_reason"]["code"], body["current_attempt"]) == ("FAILED", "OOM_KILLED", 1)
    assert body["execution_summary"]["exit_code"] == 137
    assert body["execution_summary"]["error_message"] == "out of memory"
    assert body["events"][-1]["type"] == "FAILED"


async def test_retry_policy_retries_matching_failures(client: httpx.AsyncClient, nats_url: str) -> None:
    policy = {"max_attempts": 2, "retry_on": ["EXIT_CODE"]}
    run = await running_run(client, nats_url, retry_policy=policy)
    first = (await event(client, run["id"], "FAILED", reason="EXIT_CODE", exit_code=1, error="boom")).json()
    assert (first["state"], first["current_attempt"]) == ("PENDING", 2)
    attempts = (await client.get(f"/runs/{run['id']}/attempts")).json()["data"]
    assert [(a["number"], a["state"]) for a in attempts] == [(1, "FAILED"), (2, "PENDING")]
    assert attempts[0]["state_reason"]["code"] == "EXIT_CODE"

    # The second attempt is the last one the policy allows: its failure is final.
    await assign_run(nats_url, run["id"])
    assert (await event(client, run["id"], "STARTED", attempt=2)).status_code == 200
    last = (await event(client, run["id"], "FAILED", attempt=2, reason="EXIT_CODE", exit_code=1)).json()
    assert (last["state"], last["current_attempt"]) == ("FAILED", 2)


async def test_failures_not_in_retry_on_are_final(client: httpx.AsyncClient, nats_url: str) -> None:
    run = await running_run(client, nats_url, retry_policy={"max_attempts": 3, "retry_on": ["TIMEOUT"]})
    body = (await event(client, run["id"], "FAILED", reason="EXIT_CODE", exit_code=2)).json()
    assert (body["state"], body["current_attempt"]) == ("FAILED", 1)


async def test_cancel_of_a_running_run_asks_the_worker(client: httpx.AsyncClient, nats_url: str) -> None:
    run = await running_run(client, nats_url)
    requested = await client.post(f"/runs/{run['id']}/cancel")
    assert requested.status_code == 200
    assert (requested.json()["state"], requested.json()["cancel_requested"]) == ("RUNNING", True)
    again = await client.post(f"/runs/{run['id']}/cancel")
    assert again.status_code == 200 and again.json()["cancel_requested"] is True

    confirmed = await event(client, run["id"], "CANCELLED", "stopped by SIGTERM")
    assert confirmed.status_code == 200
    assert (confirmed.json()["state"], confirmed.json()["state_reason"]["code"]) == ("CANCELLED", "USER")


async def test_cancel_of_an_assigned_run_is_immediate(client: httpx.AsyncClient, nats_url: str) -> None:
    run = await adhoc_run(client)
    await assign_run(nats_url, run["id"])
    cancelled = await client.post(f"/runs/{run['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "CANCELLED"


async def test_manual_retry_of_a_failed_run(client: httpx.AsyncClient, nats_url: str) -> None:
    run = await running_run(client, nats_url)
    await event(client, run["id"], "FAILED", reason="CONTAINER_ERROR", error="no entrypoint")
    retried = await client.post(f"/runs/{run['id']}/retry")
    assert retried.status_code == 200
    assert (retried.json()["state"], retried.json()["current_attempt"]) == ("PENDING", 2)
    assert retried.json()["outputs"] == {} and retried.json()["progress"] == 0
