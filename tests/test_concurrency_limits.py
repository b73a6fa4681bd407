"""Concurrency limits through the real server (issue 13.2): with far more room on the workers than the limit, runs
submitted all at once (singles and a batch, in parallel) never hold more places than ``max_concurrent`` or a
concurrency key's limit, the waiting ones say why, and every run completes. Bad limits are a 400 naming the field."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tests.api_checks import error_of, fields
from tests.simworker import Cluster, Fleet, SimWorker, wait_run
from tests.waiting import until

WORK_S = 0.05  # how long a simulated attempt runs


class Tally:
    """How many attempts the workers hold at once, and the most ever: what the scheduler admitted."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.done: set[str] = set()
        self.taken: set[tuple[str, int]] = set()

    async def work(self, worker: SimWorker, stop: asyncio.Event) -> None:
        """Claim again and again, running every attempt claimed at once, each on its own."""
        attempts: list[asyncio.Task[None]] = []
        while not stop.is_set():
            for item in await worker.claim(wait=0.2):  # a claim lists an attempt again until it is STARTED
                if (item["run_id"], item["attempt"]) not in self.taken:
                    self.taken.add((item["run_id"], item["attempt"]))
                    attempts.append(asyncio.create_task(self._attempt(worker, item)))
        await asyncio.gather(*attempts)

    async def _attempt(self, worker: SimWorker, item: dict[str, Any]) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        assert (await worker.report(item["run_id"], item["attempt"], "STARTED")).status_code == 200
        await asyncio.sleep(WORK_S)
        done = await worker.report(item["run_id"], item["attempt"], "COMPLETED", payload={"outputs": {}})
        assert done.status_code == 200, done.text
        self.now -= 1
        self.done.add(item["run_id"])


async def submit_all_at_once(http: httpx.AsyncClient, path: str, item: dict[str, Any], singles: int) -> list[str]:
    async def one() -> str:
        response = await http.post(path, json=item)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def batch() -> list[str]:
        response = await http.post(path + "/batch", json={"runs": [item] * singles})
        assert response.status_code == 201, response.text
        return [run["id"] for run in response.json()["data"]]

    *alone, together = await asyncio.gather(*(one() for _ in range(singles)), batch())
    return [*alone, *together]


async def run_to_the_end(http: httpx.AsyncClient, fleet: Fleet, tag: str, path: str, item: dict[str, Any]) -> Tally:
    workers = [await fleet.add(f"roomy-{n}", cpu=64, ram_mb=65536, tags=[tag]) for n in range(2)]
    tally, stop = Tally(), asyncio.Event()
    working = [asyncio.create_task(tally.work(worker, stop)) for worker in workers]
    run_ids = await submit_all_at_once(http, path, item, singles=15)
    try:
        await until(lambda: tally.done >= set(run_ids), 60, interval=0.1, what="every run completed")
    finally:
        stop.set()
        await asyncio.gather(*working)
    for run_id in run_ids[:3]:
        assert (await wait_run(http, run_id, state="COMPLETED"))["state"] == "COMPLETED"
    return tally


async def test_max_concurrent_is_never_exceeded_however_the_runs_arrive(
    http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    name = "limited-" + uuid.uuid4().hex[:8]
    definition = {"name": name, "version": "1.0.0", "image": "sim/op:1", "tags": [tag], "max_concurrent": 3,
                  "constraints": {"cpu": 1, "ram_mb": 64}}  # fmt: skip
    assert (await http.post("/definitions", json=definition)).status_code == 201
    tally = await run_to_the_end(http, fleet, tag, f"/definitions/{name}/runs", {"inputs": {}})
    assert tally.most == 3  # reached, never passed


async def test_a_concurrency_key_is_never_exceeded_however_the_runs_arrive(
    http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    key = "licence-" + uuid.uuid4().hex[:8]
    item = {"image": "sim/op:1", "tags": [tag], "concurrency": {"key": key, "limit": 2}}
    tally = await run_to_the_end(http, fleet, tag, "/runs", item)
    assert tally.most == 2


async def test_a_full_group_says_so_in_the_pending_reason(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> None:
    key = "gpu-licence-" + uuid.uuid4().hex[:8]
    await fleet.add("holder", cpu=8, tags=[tag])
    item = {"image": "sim/op:1", "tags": [tag], "concurrency": {"key": key, "limit": 1}}
    first, second = [(await http.post("/runs", json=item)).json() for _ in range(2)]
    await wait_run(http, first["id"], state="ASSIGNED")
    held = await wait_run(http, second["id"], state="PENDING", reason="CONCURRENCY_LIMIT", timeout=15)
    assert held["state_reason"]["message"] == f"concurrency key {key}: 1/1 assigned or running"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/definitions", {"max_concurrent": 0}, "max_concurrent"),
        ("/definitions", {"max_concurrent": "3"}, "max_concurrent"),
        ("/definitions", {"concurrency": {"key": "k", "limit": 0}}, "concurrency.limit"),
        ("/definitions", {"concurrency": {"key": "has space", "limit": 1}}, "concurrency.key"),
        ("/runs", {"concurrency": {"limit": 2}}, "concurrency.key"),
        ("/runs", {"concurrency": {"key": "k", "limit": 2, "burst": 1}}, "concurrency.burst"),
        ("/runs", {"max_concurrent": 2}, "max_concurrent"),
        ("/definitions", {"keep_warm_seconds": -1}, "keep_warm_seconds"),
        ("/definitions", {"keep_warm_seconds": 30 * 86400}, "keep_warm_seconds"),
        ("/definitions", {"max_instances": 0}, "max_instances"),
        ("/runs", {"keep_warm_seconds": 60}, "keep_warm_seconds"),
        ("/runs", {"max_instances": 2}, "max_instances"),
    ],
)
async def test_a_bad_limit_is_400_naming_the_field(
    http: httpx.AsyncClient, unique_name: str, path: str, body: dict[str, Any], field: str
) -> None:
    base = {"name": unique_name, "version": "1.0.0", "image": "sim/op:1"} if path == "/definitions" else {}
    response = await http.post(path, json={"image": "sim/op:1", **base, **body})
    assert fields(error_of(response, 400)) == {field}


async def test_a_run_of_a_definition_may_set_its_key_but_not_the_definitions_limit(
    http: httpx.AsyncClient, unique_name: str, tag: str
) -> None:
    definition = {"name": unique_name, "version": "1.0.0", "image": "sim/op:1", "tags": [tag], "max_concurrent": 4}
    assert (await http.post("/definitions", json=definition)).status_code == 201
    for field, value in (("max_concurrent", 9), ("keep_warm_seconds", 60), ("max_instances", 2)):
        refused = await http.post(f"/definitions/{unique_name}/runs", json={field: value})
        assert fields(error_of(refused, 400)) == {field}
    keyed = await http.post(f"/definitions/{unique_name}/runs", json={"concurrency": {"key": "team-a", "limit": 1}})
    assert keyed.status_code == 201, keyed.text
    assert (keyed.json()["max_concurrent"], keyed.json()["concurrency"]) == (4, {"key": "team-a", "limit": 1})


# --- quotas (issue 13.2) ---------------------------------------------------------------------------------------------


async def test_a_keys_quota_holds_its_runs_and_raising_it_lets_more_in(
    http: httpx.AsyncClient, fleet: Fleet, tag: str, cluster: Cluster
) -> None:
    created = await http.post("/keys", json={"name": "team-a", "role": "submit", "quota": {"cpu": 2}})
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["quota"] == {"gpus": None, "vram_mb": None, "cpu": 2.0, "ram_mb": None, "weight": 1}
    await fleet.add("roomy", cpu=16, ram_mb=65536, tags=[tag])
    item = {"image": "sim/op:1", "tags": [tag], "constraints": {"cpu": 1, "ram_mb": 64}}
    async with httpx.AsyncClient(base_url=cluster.url, headers={"X-API-Key": key["token"]}, timeout=30) as team:
        runs = [(await team.post("/runs", json=item)).json() for _ in range(5)]
    assert {run["owner"] for run in runs} == {key["id"]}
    unlimited = (await http.post("/runs", json=item)).json()  # the bootstrap key's run: no quota
    await wait_run(http, unlimited["id"], state="ASSIGNED")

    async def assigned() -> int:
        return sum([(await http.get(f"/runs/{run['id']}")).json()["state"] == "ASSIGNED" for run in runs])

    await until(lambda: _equals(assigned, 2), 10, what="two runs placed: the quota's 2 CPUs")
    states = {run["id"]: (await http.get(f"/runs/{run['id']}")).json()["state"] for run in runs}
    waiting = [run_id for run_id, state in states.items() if state == "PENDING"]
    held = await wait_run(http, waiting[0], state="PENDING", reason="QUOTA_EXCEEDED", timeout=15)
    assert held["state_reason"]["message"] == "quota of key team-a: 2/2 CPU in use"

    raised = await http.put(f"/keys/{key['id']}/quota", json={"quota": {"cpu": 4}})
    assert raised.status_code == 200 and raised.json()["quota"]["cpu"] == 4
    await until(lambda: _equals(assigned, 4), 10, what="two more placed once the quota was raised")
    lifted = await http.put(f"/keys/{key['id']}/quota", json={"quota": None})
    assert lifted.json()["quota"] is None
    await until(lambda: _equals(assigned, 5), 10, what="the last one placed once the quota was lifted")


async def _equals(count: Any, expected: int) -> bool:
    return bool(await count() == expected)


@pytest.mark.parametrize(
    ("body", "field"),
    [({"quota": {"cpu": -1}}, "quota.cpu"), ({"quota": {"gpu": 1}}, "quota.gpu"), ({}, "quota")],
)
async def test_a_bad_quota_is_400_naming_the_field(http: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    key = (await http.post("/keys", json={"name": "q", "role": "submit"})).json()
    assert fields(error_of(await http.put(f"/keys/{key['id']}/quota", json=body), 400)) == {field}
    reader = (await http.post("/keys", json={"name": "r", "role": "read"})).json()
    refused = await http.put(f"/keys/{reader['id']}/quota", json={"quota": {"cpu": 1}})
    assert fields(error_of(refused, 400)) == {"quota"}
    at_creation = await http.post("/keys", json={"name": "r", "role": "read", "quota": {"cpu": 1}})
    assert fields(error_of(at_creation, 400)) == {"quota"}
    error_of(await http.put("/keys/0000000000000000/quota", json={"quota": None}), 404, "KEY_NOT_FOUND")
