"""Worker loss (SPEC §5.4-5.5, §3 fencing): eviction of a silent worker, reconciliation of what a live worker
reports, and cancel commands reaching the worker.

Simulated workers heartbeat over real HTTP against a private cluster (worker timeout 2 s); each test tags its own
workers and runs so the module's scheduler never mixes tests.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import nats

from tests.simworker import FAST_SETTINGS, Cluster, Fleet, SimWorker, all_events, create_run, wait_run
from tests.waiting import until

WORKER_TIMEOUT = float(FAST_SETTINGS["GYOZA_WORKER_TIMEOUT"])


async def claim_one(worker: SimWorker, run_id: str) -> dict[str, Any]:
    """Long-poll until ``run_id`` is among the worker's assignments."""

    async def claimed() -> dict[str, Any] | None:
        return next((a for a in await worker.claim(wait=1) if a["run_id"] == run_id), None)

    return await until(claimed, what=f"{worker.worker_id} claims {run_id}")


async def test_silent_worker_is_evicted_and_its_runs_move(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> None:
    old = await fleet.add("old", cpu=2, tags=[tag])
    running = (await create_run(http, [tag], cpu=1))["id"]
    assigned = (await create_run(http, [tag], cpu=1))["id"]
    await claim_one(old, running)
    assert (await old.report(running, 1, "STARTED")).status_code == 200
    await wait_run(http, assigned, state="ASSIGNED")
    spare = await fleet.add("spare", cpu=2, tags=[tag])

    await old.stop_heartbeats()
    silent_since = old.last_heartbeat_at
    retried = await wait_run(http, running, timeout=WORKER_TIMEOUT + 5, state="ASSIGNED", attempt=2)
    moved = await wait_run(http, assigned, timeout=5, state="ASSIGNED")
    elapsed = time.monotonic() - silent_since
    print(f"both runs reassigned {elapsed:.2f} s after the last heartbeat (timeout {WORKER_TIMEOUT:g} s)")
    assert elapsed < WORKER_TIMEOUT + 2.5
    assert retried["worker_id"] == spare.worker_id and moved["worker_id"] == spare.worker_id

    attempts = (await http.get(f"/runs/{running}/attempts")).json()["data"]
    assert (attempts[0]["state"], attempts[0]["state_reason"]["code"]) == ("FAILED", "WORKER_LOST")
    assert [e["type"] for e in await all_events(http, assigned)] == ["CREATED", "ASSIGNED", "UNASSIGNED", "ASSIGNED"]
    assert moved["current_attempt"] == 1
    assert (await old.view())["status"] == "OFFLINE"

    # The evicted worker finishes its old attempt late: fenced off, nothing of the new attempt changes.
    late = await old.report(running, 1, "COMPLETED", payload={"outputs": {"x": 1}})
    assert late.status_code == 409 and late.json()["error"]["code"] == "STALE_ATTEMPT"
    assert (await http.get(f"/runs/{running}")).json()["state"] == "ASSIGNED"

    # It comes back still holding both old assignments: told to cancel them, and it is ONLINE again.
    old.held = {(running, 1), (assigned, 1)}
    reply = await old.heartbeat()
    assert reply.status_code == 200
    assert sorted((c["run_id"], c["attempt"]) for c in reply.json()["commands"]) == sorted(old.held)
    assert (await old.view())["status"] == "ONLINE"


async def test_running_attempt_missing_from_two_reports_is_lost_and_retried(
    http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    worker = await fleet.add("restarts", tags=[tag])
    run = (await create_run(http, [tag], cpu=1))["id"]
    await claim_one(worker, run)
    assert (await worker.report(run, 1, "STARTED")).status_code == 200
    await worker.beats_after(1)
    assert (await http.get(f"/runs/{run}")).json()["state"] == "RUNNING", "reported attempts are kept"

    worker.forget()  # restarted under the same name, its container gone
    retried = await wait_run(http, run, timeout=5, attempt=2)
    attempts = (await http.get(f"/runs/{run}/attempts")).json()["data"]
    assert (attempts[0]["state"], attempts[0]["state_reason"]["code"]) == ("FAILED", "WORKER_LOST")
    assert retried["state"] in ("PENDING", "ASSIGNED")
    assert (await worker.view())["status"] == "ONLINE", "a live worker is reconciled, not evicted"


async def test_run_lost_after_a_slow_claim_is_still_retried(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> None:
    # A busy worker leaves its assignment unclaimed (unreported) for several heartbeats, then starts it and restarts.
    worker = await fleet.add("slow", tags=[tag])
    run = (await create_run(http, [tag], cpu=1))["id"]
    await wait_run(http, run, state="ASSIGNED")
    await worker.beats_after(3)
    assert (await http.get(f"/runs/{run}")).json()["state"] == "ASSIGNED", "an unclaimed assignment is not lost"
    assert [a["run_id"] for a in await worker.claim(hold=False)] == [run], "redelivered to the next claim"
    assert (await worker.report(run, 1, "STARTED")).status_code == 200
    worker.forget()  # ...and restarts, its container gone
    await wait_run(http, run, timeout=5, attempt=2)


async def test_cancel_of_a_running_run_reaches_the_worker(
    cluster: Cluster, http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    worker = await fleet.add("cancel", tags=[tag])
    nc = await nats.connect(cluster.nats_url)
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_message(msg: Any) -> None:
        await messages.put(json.loads(msg.data))

    try:
        await nc.subscribe(f"gyoza.workers.{worker.worker_id}.assignments", cb=on_message)
        await nc.flush()
        run = (await create_run(http, [tag], cpu=1))["id"]
        published = await asyncio.wait_for(messages.get(), 5)
        assert (published["type"], published["run_id"], published["attempt"]) == ("assign", run, 1)
        await claim_one(worker, run)
        assert (await worker.report(run, 1, "STARTED")).status_code == 200

        requested = await http.post(f"/runs/{run}/cancel")
        assert requested.status_code == 200 and requested.json()["cancel_requested"] is True
        command = await asyncio.wait_for(messages.get(), 5)
        assert command == {"type": "cancel", "run_id": run, "attempt": 1}
        reply = await worker.heartbeat()
        assert {"type": "cancel", "run_id": run, "attempt": 1} in reply.json()["commands"]
    finally:
        await nc.close()

    assert (await worker.report(run, 1, "CANCELLED", "stopped")).status_code == 200
    cancelled = await wait_run(http, run, state="CANCELLED")
    assert cancelled["state_reason"]["code"] == "USER"
