"""``?wait=`` on run creation (``POST /runs``, ``POST /definitions/{name}/runs``): the 201 comes once the run has
finished or the wait is over, whichever is first; a bad wait is a 400 naming it, and creates nothing.

A private cluster (real nats-server and Gyoza server) with a simulated worker that claims and reports.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.api_checks import error_of, fields
from tests.simworker import Fleet


async def test_wait_returns_the_finished_run_when_it_ends_in_time(
    http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    worker = await fleet.add("waiter", tags=[tag])

    async def finish_it() -> None:
        [item] = await worker.claim(wait=20)  # under the client's 30 s timeout
        await worker.report(item["run_id"], 1, "STARTED")
        await worker.report(item["run_id"], 1, "COMPLETED", payload={"outputs": {"ok": True}})

    done = asyncio.create_task(finish_it())
    response = await http.post("/runs", params={"wait": "30"}, json={"image": "sim/op:1", "tags": [tag]})
    await done
    assert response.status_code == 201
    assert response.json()["state"] == "COMPLETED" and response.json()["outputs"] == {"ok": True}


async def test_wait_returns_the_run_as_it_stands_when_time_runs_out(http: httpx.AsyncClient, tag: str) -> None:
    response = await http.post("/runs", params={"wait": "0.3"}, json={"image": "sim/op:1", "tags": [tag]})
    assert response.status_code == 201 and response.json()["state"] == "PENDING"


async def test_a_bad_wait_is_refused_and_creates_nothing(http: httpx.AsyncClient, tag: str) -> None:
    label = uuid.uuid4().hex
    body = {"image": "sim/op:1", "tags": [tag], "labels": {"t": label}}
    for bad in ("61", "-1", "abc", "nan"):
        assert fields(error_of(await http.post("/runs", params={"wait": bad}, json=body), 400)) == {"wait"}
    name = "wait-" + uuid.uuid4().hex[:8]
    definition = {"name": name, "version": "1", "image": "sim/op:1", "tags": [tag]}
    assert (await http.post("/definitions", json=definition)).status_code == 201
    refused = await http.post(f"/definitions/{name}/runs", params={"wait": "x"}, json={"labels": {"t": label}})
    assert fields(error_of(refused, 400)) == {"wait"}
    assert (await http.get("/runs", params={"label": f"t:{label}"})).json()["data"] == []
    waited = await http.post(f"/definitions/{name}/runs", params={"wait": "0.1"}, json={})
    assert waited.status_code == 201 and waited.json()["state"] == "PENDING"
