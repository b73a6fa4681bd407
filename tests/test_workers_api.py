"""The worker endpoints (SPEC §4): registration by heartbeat, fleet status, drain, and refusal of bad input.

Runs against a private cluster with simulated workers; each test uses its own worker ids and tags.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import nats
import pytest

from tests.processes import API_KEY
from tests.simworker import FAST_SETTINGS, Cluster, Fleet, create_run, get_run, gpu, unique_tag, wait_run


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_heartbeat_registers_a_worker_with_its_resources(http: httpx.AsyncClient) -> None:
    worker_id = "reg-" + uuid.uuid4().hex[:6]
    body = {
        "resources": {"cpu": 6.5, "ram_mb": 16000, "gpus": [gpu(0, 24000), gpu(1, 8000)]},
        "tags": ["a100", "eu"],
        "running": [],
        "version": "1.2.3",
    }
    reply = await http.post(f"/workers/{worker_id}/heartbeat", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"commands": [], "heartbeat_interval_s": float(FAST_SETTINGS["GYOZA_HEARTBEAT_INTERVAL"])}

    view = (await http.get(f"/workers/{worker_id}")).json()
    assert (view["id"], view["status"], view["tags"], view["version"]) == (worker_id, "ONLINE", ["a100", "eu"], "1.2.3")
    assert view["totals"] == {"cpu": 6.5, "ram_mb": 16000, "vram_mb": 32000}
    assert view["reserved"] == {"cpu": 0.0, "ram_mb": 0, "vram_mb": 0}
    assert view["free"] == view["totals"]
    assert [(g["index"], g["vram_mb"], g["free_vram_mb"]) for g in view["gpus"]] == [(0, 24000, 24000), (1, 8000, 8000)]
    assert view["running"] == []
    listed = (await http.get("/workers")).json()["data"]
    assert worker_id in [w["id"] for w in listed]


async def test_drained_worker_gets_no_new_work_but_finishes_its_own(http: httpx.AsyncClient, fleet: Fleet) -> None:
    tag = unique_tag()
    worker = await fleet.add("drain", cpu=2, tags=[tag])
    first = (await create_run(http, [tag], cpu=1))["id"]
    await wait_run(http, first, state="ASSIGNED")
    assert [a["run_id"] for a in await worker.claim()] == [first]
    assert (await worker.report(first, 1, "STARTED")).status_code == 200

    drained = await http.post(f"/workers/{worker.worker_id}/drain")
    assert drained.status_code == 200, drained.text
    assert drained.json()["status"] == "DRAINING"
    assert [r["run_id"] for r in drained.json()["running"]] == [first]

    # The worker has a free core, yet a new run waits (with its reason written, so the scheduler did look at it):
    # no schedulable worker has the tag (or, when this test runs alone, none is schedulable at all).
    second = (await create_run(http, [tag], cpu=1))["id"]
    waiting = await wait_run(http, second, timeout=3, state="PENDING", reason=("NO_WORKER_WITH_TAGS", "NO_WORKERS"))
    assert waiting["worker_id"] is None
    completed = await worker.report(first, 1, "COMPLETED", payload={"outputs": {"ok": True}})
    assert completed.status_code == 200, completed.text
    assert completed.json()["state"] == "COMPLETED"
    await worker.beats_after(2)  # heartbeats do not undo the drain, and the now idle worker still gets nothing
    assert (await worker.view())["status"] == "DRAINING"
    assert (await get_run(http, second))["state"] == "PENDING"
    again = await http.post(f"/workers/{worker.worker_id}/drain")
    assert again.status_code == 200 and again.json()["status"] == "DRAINING"

    other = await fleet.add("undrained", cpu=2, tags=[tag])
    placed = await wait_run(http, second, state="ASSIGNED")
    assert placed["worker_id"] == other.worker_id


async def test_unknown_worker_is_404(http: httpx.AsyncClient) -> None:
    for response in (await http.get("/workers/nobody-here"), await http.post("/workers/nobody-here/drain")):
        assert error_of(response, 404)["code"] == "WORKER_NOT_FOUND"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tags": []}, "resources"),
        ({"resources": {"cpu": -1, "ram_mb": 1000}}, "resources.cpu"),
        ({"resources": {"cpu": 1, "ram_mb": True}}, "resources.ram_mb"),
        ({"resources": {"cpu": 1, "ram_mb": 1000, "gpus": [{"index": 0}]}}, "resources.gpus.0.vram_mb"),
        ({"resources": {"cpu": 1, "ram_mb": 1000}, "running": [{"run_id": "r", "attempt": 0}]}, "running.0.attempt"),
    ],
)
async def test_invalid_heartbeat_is_400_naming_the_field(
    http: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    worker_id = "bad-" + uuid.uuid4().hex[:6]
    error = error_of(await http.post(f"/workers/{worker_id}/heartbeat", json=body), 400)
    assert field in [d["field"] for d in error["details"]]
    # Refused means nothing changed: the worker was not registered.
    assert (await http.get(f"/workers/{worker_id}")).status_code == 404


@pytest.mark.parametrize("worker_id", ["-leading-dash", "has.dot", "x" * 64])
async def test_invalid_worker_id_is_400(http: httpx.AsyncClient, worker_id: str) -> None:
    ok_body = {"resources": {"cpu": 1, "ram_mb": 1000}}
    for response in (
        await http.post(f"/workers/{worker_id}/heartbeat", json=ok_body),
        await http.post(f"/workers/{worker_id}/claim"),
        await http.get(f"/workers/{worker_id}"),
    ):
        assert error_of(response, 400)["details"][0]["field"] == "worker_id"


@pytest.mark.parametrize("wait", ["-1", "abc", "61", "nan"])
async def test_invalid_claim_wait_is_400(http: httpx.AsyncClient, wait: str) -> None:
    error = error_of(await http.post("/workers/claimer/claim", params={"wait": wait}), 400)
    assert error["details"][0]["field"] == "wait"


async def test_claim_without_work_returns_empty_after_the_wait(http: httpx.AsyncClient) -> None:
    response = await http.post("/workers/idle-claimer/claim", params={"wait": "0.2"})
    assert response.status_code == 200 and response.json() == {"data": []}


async def test_worker_endpoints_need_the_api_key(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.url, headers={"X-API-Key": API_KEY + "x"}) as wrong:
        body = {"resources": {"cpu": 1, "ram_mb": 1000}}
        assert (await wrong.post("/workers/w/heartbeat", json=body)).status_code == 401
        assert (await wrong.post("/workers/w/claim")).status_code == 401
        assert (await wrong.get("/workers")).status_code == 401


async def test_a_worker_can_heartbeat_over_nats_with_the_rest_body(cluster: Cluster, http: httpx.AsyncClient) -> None:
    """SPEC: ``gyoza.workers.<id>.heartbeat`` takes the same payload as POST /workers/{id}/heartbeat."""
    worker_id = f"nats-hb-{unique_tag()}"
    body = {"resources": {"cpu": 2, "ram_mb": 2048, "gpus": []}, "tags": ["x"], "running": [], "version": "t"}
    connection = await nats.connect(cluster.nats_url)
    try:
        reply = await connection.request(f"gyoza.workers.{worker_id}.heartbeat", json.dumps(body).encode(), timeout=5)
        assert json.loads(reply.data)["heartbeat_interval_s"] > 0
        view = (await http.get(f"/workers/{worker_id}")).json()
        assert (view["status"], view["totals"]["ram_mb"], view["tags"]) == ("ONLINE", 2048, ["x"])

        bad = await connection.request(f"gyoza.workers.{worker_id}.heartbeat", b'{"resources": {"cpu": -1}}', timeout=5)
        error = json.loads(bad.data)["error"]
        assert error["code"] == "INVALID_REQUEST"
        assert {d["field"] for d in error["details"]} >= {"resources.cpu", "resources.ram_mb"}
    finally:
        await connection.close()
