"""Placement (SPEC §5.1-5.3): which worker and GPUs a run gets, in which order, and why it waits when it cannot.

Simulated workers heartbeat over real HTTP against a private cluster. Tests share the module's cluster, so each one
gives its workers and runs a tag of its own: the scheduler can then never hand one test's runs to another's workers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.simworker import Cluster, Fleet, SimWorker, create_run, get_run, gpu, wait_run
from tests.waiting import until

GB = 1000


async def assigned(http: httpx.AsyncClient, run_id: str, worker: SimWorker | None = None) -> dict[str, Any]:
    run = await wait_run(http, run_id, state="ASSIGNED")
    if worker is not None:
        assert run["worker_id"] == worker.worker_id
    return run


async def start_and_complete(worker: SimWorker, run_id: str) -> None:
    assert (await worker.report(run_id, 1, "STARTED")).status_code == 200
    assert (await worker.report(run_id, 1, "COMPLETED", payload={"outputs": {}})).status_code == 200


# --- GPUs ----------------------------------------------------------------------------------------------------------


async def test_vram_run_avoids_the_fuller_gpu(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> None:
    worker = await fleet.add("gpu2", gpus=[gpu(0, 24 * GB), gpu(1, 24 * GB)], tags=[tag])
    big = await assigned(http, (await create_run(http, [tag], vram_mb=22 * GB))["id"], worker)
    [full] = big["gpu_ids"]
    small = await assigned(http, (await create_run(http, [tag], vram_mb=4 * GB))["id"], worker)
    assert small["gpu_ids"] == [1 - full], "only the other GPU has 4 GB free"

    view = await until(reserved_vram(worker, 26 * GB), what="reservations visible")
    per_gpu = {g["index"]: (g["reserved_vram_mb"], g["free_vram_mb"]) for g in view["gpus"]}
    assert per_gpu == {full: (22 * GB, 2 * GB), 1 - full: (4 * GB, 20 * GB)}


async def test_best_fit_takes_the_smallest_gpu_that_fits(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> None:
    # The large GPU has the lower index, so only best fit (not index order) picks the 8 GB one.
    worker = await fleet.add("bestfit", gpus=[gpu(0, 24 * GB), gpu(1, 8 * GB)], tags=[tag])
    run = await assigned(http, (await create_run(http, [tag], vram_mb=4 * GB))["id"], worker)
    assert run["gpu_ids"] == [1]
    claimed = await worker.claim()
    assert [(a["run_id"], a["gpu_ids"]) for a in claimed] == [(run["id"], [1])]


async def test_two_big_runs_get_different_gpus_and_a_third_waits_for_resources(
    http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    worker = await fleet.add("a40x2", gpus=[gpu(0, 40 * GB), gpu(1, 40 * GB)], tags=[tag])
    first = await assigned(http, (await create_run(http, [tag], vram_mb=30 * GB))["id"], worker)
    second = await assigned(http, (await create_run(http, [tag], vram_mb=30 * GB))["id"], worker)
    assert sorted(first["gpu_ids"] + second["gpu_ids"]) == [0, 1]

    # The worker is large enough but busy: that is INSUFFICIENT_RESOURCES, and the message says what is free.
    third = await create_run(http, [tag], vram_mb=30 * GB)
    waiting = await wait_run(http, third["id"], state="PENDING", reason="INSUFFICIENT_RESOURCES")
    assert "10000 MB" in waiting["state_reason"]["message"]
    await start_and_complete(worker, first["id"])
    placed = await assigned(http, third["id"], worker)
    assert placed["gpu_ids"] == first["gpu_ids"]


# --- tags and size -------------------------------------------------------------------------------------------------


async def test_tagged_run_waits_for_a_worker_with_the_tag(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> None:
    plain = await fleet.add("plain", cpu=64, ram_mb=512 * GB, tags=[tag])
    run = await create_run(http, [tag, "a100"], cpu=1)
    waiting = await wait_run(http, run["id"], state="PENDING", reason="NO_WORKER_WITH_TAGS")
    assert "a100" in waiting["state_reason"]["message"]
    await plain.beats_after(2)  # the plain worker keeps offering capacity, and still gets nothing
    assert (await get_run(http, run["id"]))["state"] == "PENDING"

    a100 = await fleet.add("a100", cpu=4, ram_mb=16 * GB, tags=[tag, "a100", "extra"])
    await assigned(http, run["id"], a100)


async def test_too_big_run_waits_for_a_large_enough_worker(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> None:
    for n in range(2):
        await fleet.add(f"ram32-{n}", cpu=8, ram_mb=32 * 1024, tags=[tag])
    run = await create_run(http, [tag], ram_mb=64 * 1024)
    started = time.monotonic()
    waiting = await wait_run(http, run["id"], timeout=3, state="PENDING", reason="NO_WORKER_LARGE_ENOUGH")
    print(f"NO_WORKER_LARGE_ENOUGH written after {time.monotonic() - started:.2f} s")
    assert "32768 MB" in waiting["state_reason"]["message"]

    big = await fleet.add("ram128", cpu=8, ram_mb=128 * 1024, tags=[tag])
    await assigned(http, run["id"], big)


async def test_run_is_placed_at_once_on_an_idle_worker(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> None:
    worker = await fleet.add("idle", tags=[tag])
    # No heartbeat comes after the run (the worker stays ONLINE until the timeout): its arrival alone must place it.
    await worker.stop_heartbeats()
    started = time.monotonic()
    run = await create_run(http, [tag], cpu=1)
    claimed = await worker.claim(wait=1.5)
    print(f"claimed {time.monotonic() - started:.3f} s after creation")
    assert [a["run_id"] for a in claimed] == [run["id"]]


async def test_no_workers_reason_then_placed_when_one_joins(tmp_path_factory: pytest.TempPathFactory) -> None:
    # A cluster of its own: "no worker online" can only be true where no other test registered one.
    cluster = await Cluster(tmp_path_factory.mktemp("empty")).start()
    fleet = Fleet(cluster.url)
    try:
        async with cluster.client() as http:
            run = await create_run(http, [], cpu=1)
            await wait_run(http, run["id"], timeout=3, state="PENDING", reason="NO_WORKERS")
            worker = await fleet.add("first")
            await assigned(http, run["id"], worker)
    finally:
        await fleet.close()
        cluster.stop()


# --- order ---------------------------------------------------------------------------------------------------------


async def fill(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> tuple[SimWorker, str]:
    """A one-core worker running a one-core run: every further one-core run of this tag has to queue."""
    worker = await fleet.add("onecore", cpu=1, ram_mb=4 * GB, tags=[tag])
    filler = await create_run(http, [tag], cpu=1)
    await assigned(http, filler["id"], worker)
    assert (await worker.report(filler["id"], 1, "STARTED")).status_code == 200
    return worker, filler["id"]


async def next_assigned(http: httpx.AsyncClient, worker: SimWorker, running: str, queued: list[str]) -> str:
    """Complete ``running`` and return which of ``queued`` the freed core goes to (the others stay PENDING)."""
    assert (await worker.report(running, 1, "COMPLETED", payload={"outputs": {}})).status_code == 200
    [claimed] = await worker.claim(wait=5)
    winner: str = claimed["run_id"]
    assert winner in queued
    for run_id in queued:
        if run_id != winner:
            assert (await get_run(http, run_id))["state"] == "PENDING"
    assert (await worker.report(winner, 1, "STARTED")).status_code == 200
    return winner


async def test_higher_priority_goes_first(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> None:
    worker, filler = await fill(http, fleet, tag)
    low = (await create_run(http, [tag], priority=1, cpu=1))["id"]
    high = (await create_run(http, [tag], priority=90, cpu=1))["id"]
    assert await next_assigned(http, worker, filler, [low, high]) == high
    assert await next_assigned(http, worker, high, [low]) == low


async def test_equal_priority_is_first_in_first_out(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> None:
    worker, filler = await fill(http, fleet, tag)
    queued = [(await create_run(http, [tag], priority=7, cpu=1))["id"] for _ in range(3)]
    running = filler
    for expected in queued:
        running = await next_assigned(http, worker, running, queued)
        assert running == expected
        queued = queued[1:]


async def test_patch_priority_reorders_the_queue(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> None:
    worker, filler = await fill(http, fleet, tag)
    older = (await create_run(http, [tag], cpu=1))["id"]
    newer = (await create_run(http, [tag], cpu=1))["id"]
    patched = await http.patch(f"/runs/{newer}", json={"priority": 50})
    assert patched.status_code == 200 and patched.json()["priority"] == 50
    # The scheduler follows run records in KV order, so it sees the new priority before the completion below.
    assert await next_assigned(http, worker, filler, [older, newer]) == newer


# --- reservations --------------------------------------------------------------------------------------------------


def reserved_vram(worker: SimWorker, vram_mb: int) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    """A predicate for ``until``: the worker's view once its reserved VRAM is ``vram_mb``."""

    async def check() -> dict[str, Any] | None:
        view = await worker.view()
        return view if view["reserved"]["vram_mb"] == vram_mb else None

    return check


async def test_reservations_are_released_at_every_terminal_state(
    http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    worker = await fleet.add("ledger", cpu=4, ram_mb=8 * GB, gpus=[gpu(0, 24 * GB)], tags=[tag])
    runs = [(await create_run(http, [tag], cpu=1, ram_mb=1 * GB, vram_mb=5 * GB))["id"] for _ in range(4)]
    for run_id in runs:
        await assigned(http, run_id, worker)
    view = await until(reserved_vram(worker, 20 * GB), what="all four reserved")
    assert view["reserved"] == {"cpu": 4.0, "ram_mb": 4 * GB, "vram_mb": 20 * GB}
    assert view["free"] == {"cpu": 0.0, "ram_mb": 4 * GB, "vram_mb": 4 * GB}
    assert view["gpus"][0]["free_vram_mb"] == 4 * GB
    assert {r["run_id"] for r in view["running"]} == set(runs)

    completed, failed, cancelled_by_worker, cancelled_assigned = runs
    for run_id in runs[:3]:
        assert (await worker.report(run_id, 1, "STARTED")).status_code == 200
    ends = [
        (completed, worker.report(completed, 1, "COMPLETED", payload={"outputs": {}}), "COMPLETED"),
        (failed, worker.report(failed, 1, "FAILED", payload={"reason": "EXIT_CODE", "exit_code": 3}), "FAILED"),
        (cancelled_by_worker, _cancel_then_report(http, worker, cancelled_by_worker), "CANCELLED"),
        (cancelled_assigned, http.post(f"/runs/{cancelled_assigned}/cancel"), "CANCELLED"),
    ]
    still_reserved = 20 * GB
    for run_id, end, state in ends:
        assert (await end).status_code == 200
        await wait_run(http, run_id, state=state)
        still_reserved -= 5 * GB
        view = await until(reserved_vram(worker, still_reserved), what=f"{state} released")
        assert view["reserved"]["cpu"] == still_reserved / (5 * GB)
    assert view["free"] == {"cpu": 4.0, "ram_mb": 8 * GB, "vram_mb": 24 * GB}

    # The scheduler's own ledger was released too: a run needing the whole worker is placed there.
    whole = await create_run(http, [tag], cpu=4, ram_mb=8 * GB, vram_mb=24 * GB)
    await assigned(http, whole["id"], worker)


async def _cancel_then_report(http: httpx.AsyncClient, worker: SimWorker, run_id: str) -> httpx.Response:
    """User cancel of a RUNNING run only requests it; the worker's CANCELLED event ends the attempt."""
    requested = await http.post(f"/runs/{run_id}/cancel")
    assert requested.status_code == 200 and requested.json()["state"] == "RUNNING"
    return await worker.report(run_id, 1, "CANCELLED", "stopped on request")


# --- images ----------------------------------------------------------------------------------------------------------


async def test_a_worker_that_has_the_image_is_preferred(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> None:
    image = f"registry.example/{tag}/embedder:2"
    await fleet.add("snug", cpu=2, tags=[tag])  # the tighter fit, without the image
    pulled = await fleet.add("pulled", cpu=16, tags=[tag], images=[image, "busybox:latest"])
    body = {"image": image, "tags": [tag], "constraints": {"cpu": 1, "ram_mb": 64}}
    response = await http.post("/runs", json=body)
    assert response.status_code == 201, response.text
    await assigned(http, response.json()["id"], pulled)
    view = (await http.get(f"/workers/{pulled.worker_id}")).json()
    assert view["images"] == [image, "busybox:latest"]
