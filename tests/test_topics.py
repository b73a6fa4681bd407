"""The topic feed delivers every event of every run of a topic, in order, exactly once, across a server restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import API_KEY, GyozaServer, child_pids
from tests.scheduling import assign_run
from tests.waiting import until

PAGE = 3
EventKey = tuple[int, str, Any, str]  # (attempt, type, msg, state): what a feed consumer must see, per run


def embedded_nats_url(server: GyozaServer) -> str:
    """The client URL of the server's embedded nats-server, from the ports file nats-server writes."""
    assert server.process is not None
    [pid] = [p for p in child_pids(server.process.pid) if Path(f"/proc/{p}/comm").read_text().strip() == "nats-server"]
    [ports] = (server.data_dir / "nats" / "run").glob(f"*_{pid}.ports")
    return str(json.loads(ports.read_text())["nats"][0])


class FeedReader:
    """Pages through GET /topics/{topic}/events, checking every page as a consumer would rely on it."""

    def __init__(self, client: httpx.AsyncClient, topic: str, attributes: dict[str, Any]) -> None:
        self.client, self.topic, self.attributes = client, topic, attributes
        self.cursor = 0
        self.seen: dict[str, list[EventKey]] = {}

    async def read_available(self) -> None:
        while True:
            response = await self.client.get(
                f"/topics/{self.topic}/events", params={"after": self.cursor, "limit": PAGE}
            )
            assert response.status_code == 200, response.text
            page = response.json()
            cursors = [event["cursor"] for event in page["data"]]
            assert len(cursors) <= PAGE
            assert cursors == sorted(set(cursors)) and all(c > self.cursor for c in cursors), "cursors must increase"
            assert page["next_cursor"] == (cursors[-1] if cursors else self.cursor)
            for event in page["data"]:
                assert event["attributes"] == self.attributes
                key = (event["attempt"], event["type"], event["msg"], event["state"])
                self.seen.setdefault(event["run_id"], []).append(key)
            self.cursor = page["next_cursor"]
            if not cursors:
                return

    async def caught_up(self, expected: dict[str, list[EventKey]]) -> bool:
        """Read what is there; fail at once on a foreign run or a repeated or out-of-order event."""
        await self.read_available()
        for run_id, events in self.seen.items():
            assert run_id in expected, f"run {run_id} is not of topic {self.topic}"
            assert events == expected[run_id][: len(events)], f"run {run_id}: events repeated or out of order"
        return self.seen == expected


async def timelines(client: httpx.AsyncClient, run_ids: list[str]) -> dict[str, list[EventKey]]:
    """Every event of every attempt of each run, from the run's own timeline."""
    result = {}
    for run_id in run_ids:
        response = await client.get(f"/runs/{run_id}/events")
        assert response.status_code == 200, response.text
        result[run_id] = [(e["attempt"], e["type"], e["msg"], e["state"]) for e in response.json()["data"]]
    return result


async def deploy(client: httpx.AsyncClient, name: str, topic: str, attributes: dict[str, Any]) -> None:
    body = {
        "name": name,
        "version": "1.0.0",
        "image": "busybox:1",
        "event_delivery": {"topic": topic, "attributes": attributes},
    }
    response = await client.post("/definitions", json=body)
    assert response.status_code == 201, response.text


async def create_runs(client: httpx.AsyncClient, name: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = await client.post(f"/definitions/{name}/runs", json={})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any] | None = None) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 200, f"{path}: {response.text}"


async def work(client: httpx.AsyncClient, nats_url: str, run_id: str, attempt: int, outcome: str) -> None:
    """Play a worker: take the run, start it, report progress, then finish it with ``outcome``."""
    await assign_run(nats_url, run_id, "w1")
    events = f"/runs/{run_id}/events"
    held = {"attempt": attempt, "worker_id": "w1"}
    await post(client, events, {**held, "type": "STARTED"})
    await post(client, events, {**held, "type": "PROGRESS", "msg": 40})
    await post(client, events, {**held, "type": "INFO", "msg": "halfway"})
    if outcome == "COMPLETED":
        await post(client, events, {**held, "type": "COMPLETED", "payload": {"outputs": {"ok": True}}})
    else:
        await post(client, events, {**held, "type": "FAILED", "payload": {"reason": "EXIT_CODE", "exit_code": 2}})


async def test_topic_feed_is_complete_ordered_and_survives_restart(data_dir: Path, unique_name: str) -> None:
    topic, other_topic = f"t-{unique_name}", f"u-{unique_name}"
    attributes = {"team": "vision", "tier": 2, "tags": ["a", "b"]}
    server = GyozaServer(data_dir, None).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
            nats_url = embedded_nats_url(server)
            await deploy(client, unique_name, topic, attributes)
            await deploy(client, unique_name + "-x", other_topic, {"team": "other"})
            runs = await create_runs(client, unique_name, 6)
            others = await create_runs(client, unique_name + "-x", 2)
            await post(client, f"/runs/{runs[0]}/cancel")
            await post(client, f"/runs/{runs[0]}/retry")
            await post(client, f"/runs/{runs[1]}/cancel")
            await work(client, nats_url, runs[2], 1, "COMPLETED")
            await work(client, nats_url, runs[3], 1, "FAILED")
            await post(client, f"/runs/{runs[3]}/retry")
            await work(client, nats_url, runs[3], 2, "COMPLETED")
            await post(client, f"/runs/{others[0]}/cancel")
            await work(client, nats_url, others[1], 1, "COMPLETED")

            feed = FeedReader(client, topic, attributes)
            expected = await timelines(client, runs)
            await until(lambda: feed.caught_up(expected), timeout=10, what="topic feed delivers every event")
            other_feed = FeedReader(client, other_topic, {"team": "other"})
            expected_others = await timelines(client, others)
            await until(lambda: other_feed.caught_up(expected_others), timeout=10, what="other topic's feed")
        assert server.stop() == 0

        server = GyozaServer(data_dir, None).start()
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
            feed.client = client
            # The restarted server replays every run record: nothing already delivered may be delivered again.
            assert await feed.caught_up(expected)
            nats_url = embedded_nats_url(server)
            await post(client, f"/runs/{runs[1]}/retry")
            await work(client, nats_url, runs[1], 2, "COMPLETED")
            await post(client, f"/runs/{runs[4]}/cancel")
            runs += await create_runs(client, unique_name, 1)
            expected = await timelines(client, runs)
            await until(lambda: feed.caught_up(expected), timeout=10, what="events after the restart")

            # A new consumer starting from the beginning gets the same feed, whole.
            fresh = FeedReader(client, topic, attributes)
            assert await fresh.caught_up(expected)
    finally:
        server.stop()


@pytest.mark.parametrize("topic", ["bad.topic", "x" * 129, "%3E", "%2A", "sp%20ace"])
async def test_bad_topic_name_is_400(client: httpx.AsyncClient, topic: str) -> None:
    response = await client.get(f"/topics/{topic}/events")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_REQUEST"


@pytest.mark.parametrize(
    "params",
    [{"after": "-1"}, {"after": "abc"}, {"after": "1.5"}, {"limit": "0"}, {"limit": "abc"}, {"limit": "100000"}],
    ids=str,
)
async def test_bad_cursor_or_limit_is_400(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    response = await client.get("/topics/good-topic/events", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_REQUEST"
    assert response.json()["error"]["details"], "the error must say which parameter is wrong"
