"""GET /queue: the pending runs in scheduling order (priority desc, then oldest first) with why each waits.

A private cluster with no worker, so every run stays PENDING and this test's runs are the whole queue.
"""

from __future__ import annotations

import httpx

from tests.api_checks import error_of
from tests.simworker import create_run, wait_run


async def test_the_queue_is_in_scheduling_order_with_reasons(http: httpx.AsyncClient, tag: str) -> None:
    low = await create_run(http, [tag], priority=1)
    first_normal = await create_run(http, [tag], priority=5)
    urgent = await create_run(http, [tag], priority=90)
    second_normal = await create_run(http, [tag], priority=5)
    await wait_run(http, low["id"], reason="NO_WORKERS")
    queue = (await http.get("/queue")).json()
    assert queue["object"] == "list"
    assert [run["id"] for run in queue["data"]] == [urgent["id"], first_normal["id"], second_normal["id"], low["id"]]
    assert queue["total"] == 4
    assert queue["has_more"] is False
    assert all(run["state"] == "PENDING" and run["state_reason"]["code"] for run in queue["data"])

    head = (await http.get("/queue", params={"limit": 2})).json()
    assert [run["id"] for run in head["data"]] == [urgent["id"], first_normal["id"]]
    assert head["has_more"] is True
    assert head["total"] == 4

    # A new priority moves a run; a cancelled run leaves the queue.
    assert (await http.patch(f"/runs/{low['id']}", json={"priority": 100})).status_code == 200
    assert (await http.post(f"/runs/{urgent['id']}/cancel")).status_code == 200
    queue = (await http.get("/queue")).json()
    assert [run["id"] for run in queue["data"]] == [low["id"], first_normal["id"], second_normal["id"]]
    assert queue["total"] == 3


async def test_bad_queue_parameters_are_400(http: httpx.AsyncClient) -> None:
    for params in ({"limit": "0"}, {"limit": "501"}, {"limit": "x"}):
        error = error_of(await http.get("/queue", params=params), 400, "INVALID_REQUEST")
        assert error["details"][0]["field"] == "limit"
    error = error_of(await http.get("/queue", params={"state": "RUNNING"}), 400, "INVALID_REQUEST")
    assert error["details"][0]["field"] == "state"


async def test_the_queue_needs_the_key(http: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=str(http.base_url)) as anonymous:
        error_of(await anonymous.get("/queue"), 401, "UNAUTHORIZED")
