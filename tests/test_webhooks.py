"""Webhooks end to end: a real nats-server and Gyoza server, a simulated worker driving runs to their end, and a
receiver on loopback that fails, then succeeds (or is not there at all)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gyoza.client import AsyncGyozaClient
from gyoza.errors import NotFound
from tests.cliproc import gyoza_cli, ok
from tests.processes import API_KEY
from tests.simworker import Cluster, Fleet, SimWorker, get_run, unique_tag, wait_run
from tests.waiting import until
from tests.webhook_receiver import Receiver, closed_port_url

SECRET = "whsec-" + "k3y" * 8
MAX_ATTEMPTS = 4


@pytest.fixture(scope="module")
async def hooks_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    # Short back-offs so that retries come within the test's patience (the default first retry is 2 s).
    started = await Cluster(
        tmp_path_factory.mktemp("webhooks"), GYOZA_WEBHOOK_BACKOFF="0.05",
        GYOZA_WEBHOOK_MAX_ATTEMPTS=str(MAX_ATTEMPTS), GYOZA_WEBHOOK_TIMEOUT="2",
    ).start()  # fmt: skip
    yield started
    started.stop()


@pytest.fixture(scope="module")
async def api(hooks_cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with hooks_cluster.client() as client:
        yield client


@pytest.fixture
async def worker(hooks_cluster: Cluster) -> AsyncIterator[SimWorker]:
    fleet = Fleet(hooks_cluster.url)
    yield await fleet.add("hooks", tags=[unique_tag()])
    await fleet.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    yield started
    await started.close()


async def create_run(api: httpx.AsyncClient, worker: SimWorker, webhooks: list[dict[str, Any]]) -> dict[str, Any]:
    body = {"image": "sim/op:1", "tags": worker.tags, "constraints": {"cpu": 1}, "webhooks": webhooks}
    response = await api.post("/runs", json=body)
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


async def complete(api: httpx.AsyncClient, worker: SimWorker, run_id: str) -> dict[str, Any]:
    """Play the worker's part: claim the run, start it, complete it with outputs."""
    await wait_run(api, run_id, state="ASSIGNED")
    await until(lambda: worker.claim(), 10, what="the assignment")
    for kind, payload in (("STARTED", {}), ("COMPLETED", {"outputs": {"label": "dog"}})):
        response = await worker.report(run_id, 1, kind, payload=payload)
        assert response.status_code == 200, response.text
    return await wait_run(api, run_id, state="COMPLETED")


async def deliveries(api: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/runs/{run_id}/deliveries")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found


async def settled(api: httpx.AsyncClient, run_id: str, count: int) -> list[dict[str, Any]]:
    """Wait until the run has ``count`` deliveries and each is DELIVERED or FAILED."""

    async def done() -> list[dict[str, Any]] | None:
        found = await deliveries(api, run_id)
        ok = len(found) == count and all(d["state"] in ("DELIVERED", "FAILED") for d in found)
        return found if ok else None

    return await until(done, 20, interval=0.05, what=f"{count} settled deliveries of {run_id}")


def expected_signature(timestamp: str, body: str, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()


async def test_a_failing_receiver_gets_the_event_again_until_it_takes_it(
    api: httpx.AsyncClient, worker: SimWorker, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    run = await create_run(api, worker, [{"url": receiver.url, "secret": SECRET}])
    finished = await complete(api, worker, run["id"])

    [delivery] = await settled(api, run["id"], 1)
    assert delivery["state"] == "DELIVERED" and delivery["event_type"] == "COMPLETED"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3]
    assert all("HTTP 500" in a["error"] for a in delivery["attempts"][:2]) and delivery["attempts"][2]["error"] is None
    assert len(receiver.answered(200)) == 1 and len(receiver.received) == 3
    for got in receiver.received:
        assert got.path == "/hooks/gyoza"
        assert got.headers["x-gyoza-event"] == "COMPLETED"
        assert got.headers["x-gyoza-delivery"] == f"{run['id']}.{delivery['id']}"
        assert got.headers["content-type"] == "application/json"
        assert got.headers["x-gyoza-signature"] == expected_signature(got.headers["x-gyoza-timestamp"], got.body)
    sent = json.loads(receiver.received[-1].body)
    assert sent["run_id"] == run["id"] and sent["event"]["type"] == "COMPLETED"
    assert sent["event"]["payload"]["outputs"] == {"label": "dog"}
    # The failures never touched the run: same record, same timeline as when it completed.
    after = await get_run(api, run["id"])
    assert after["state"] == "COMPLETED" and after["updated_at"] == finished["updated_at"]
    assert after["events"] == finished["events"]


async def test_a_receiver_that_is_down_never_holds_up_the_run(api: httpx.AsyncClient, worker: SimWorker) -> None:
    hook = {"url": closed_port_url(), "events": ["CREATED", "STARTED", "COMPLETED"]}
    run = await create_run(api, worker, [hook])
    finished = await complete(api, worker, run["id"])
    assert finished["state"] == "COMPLETED"

    found = await settled(api, run["id"], 3)
    assert [d["event_type"] for d in found] == ["CREATED", "STARTED", "COMPLETED"]
    for delivery in found:
        assert delivery["state"] == "FAILED" and len(delivery["attempts"]) == MAX_ATTEMPTS
        assert all(a["status_code"] is None and a["error"] for a in delivery["attempts"])
        assert delivery["next_attempt_at"] is None
    assert (await get_run(api, run["id"]))["state"] == "COMPLETED"


async def test_the_event_filter_picks_what_each_webhook_hears(
    api: httpx.AsyncClient, worker: SimWorker, receiver: Receiver
) -> None:
    terminal = await Receiver().start()
    try:
        run = await create_run(api, worker, [{"url": receiver.url, "events": ["STARTED"]}, {"url": terminal.url}])
        await complete(api, worker, run["id"])
        found = await settled(api, run["id"], 2)
    finally:
        await terminal.close()
    assert sorted((d["event_type"], d["url"]) for d in found) == [
        ("COMPLETED", terminal.url),
        ("STARTED", receiver.url),
    ]
    assert [r.headers["x-gyoza-event"] for r in receiver.received] == ["STARTED"]
    assert "x-gyoza-signature" not in receiver.received[0].headers  # no secret, no signature
    assert [r.headers["x-gyoza-event"] for r in terminal.received] == ["COMPLETED"]


async def test_a_delivery_can_be_asked_for_again(api: httpx.AsyncClient, worker: SimWorker, receiver: Receiver) -> None:
    run = await create_run(api, worker, [{"url": receiver.url, "secret": SECRET}])
    await complete(api, worker, run["id"])
    [delivery] = await settled(api, run["id"], 1)

    response = await api.post(f"/runs/{run['id']}/deliveries/{delivery['id']}/redeliver")
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "PENDING" and response.json()["id"] == delivery["id"]
    [again] = await until(lambda: _with_attempts(api, run["id"], 2), 20, interval=0.05, what="the redelivery's attempt")
    assert again["state"] == "DELIVERED" and [a["number"] for a in again["attempts"]] == [1, 2]
    assert len(receiver.received) == 2
    first, second = receiver.received
    assert first.body == second.body and first.headers["x-gyoza-delivery"] == second.headers["x-gyoza-delivery"]

    unknown = await api.post(f"/runs/{run['id']}/deliveries/99-0/redeliver")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
    malformed = await api.post(f"/runs/{run['id']}/deliveries/not-an-id/redeliver")
    assert malformed.status_code == 404
    no_run = await api.post(f"/runs/{uuid.uuid4()}/deliveries/1-0/redeliver")
    assert no_run.status_code == 404 and no_run.json()["error"]["code"] == "RUN_NOT_FOUND"
    assert (await api.get(f"/runs/{uuid.uuid4()}/deliveries")).status_code == 404


async def _with_attempts(api: httpx.AsyncClient, run_id: str, count: int) -> list[dict[str, Any]] | None:
    found = await deliveries(api, run_id)
    return found if found and len(found[0]["attempts"]) == count and found[0]["state"] == "DELIVERED" else None


async def test_a_redelivery_while_retrying_starts_a_new_round(api: httpx.AsyncClient, worker: SimWorker) -> None:
    slow = await Receiver(fail_first=1000, answer_after_s=0.5).start()  # every attempt fails, slowly
    try:
        run = await create_run(api, worker, [{"url": slow.url, "events": ["CREATED"]}])

        async def retrying() -> list[dict[str, Any]] | None:
            found = await deliveries(api, run["id"])
            return found if found and found[0]["state"] == "RETRYING" else None

        [delivery] = await until(retrying, 10, interval=0.02, what="a failed first attempt")
        response = await api.post(f"/runs/{run['id']}/deliveries/{delivery['id']}/redeliver")
        assert response.status_code == 202, response.text
        assert response.json()["state"] == "PENDING"
        # The new round gets its own MAX_ATTEMPTS after the one failed attempt; the old round's retries stop.
        [failed] = await settled(api, run["id"], 1)
        assert [a["number"] for a in failed["attempts"]] == list(range(1, MAX_ATTEMPTS + 2))
        assert all(a["status_code"] == 500 for a in failed["attempts"])
    finally:
        await slow.close()


async def test_the_secret_is_never_answered(api: httpx.AsyncClient, worker: SimWorker, receiver: Receiver) -> None:
    name = f"hooked-{uuid.uuid4().hex[:8]}"
    definition: dict[str, Any] = {
        "name": name, "version": "1.0.0", "image": "sim/op:1", "tags": worker.tags, "constraints": {"cpu": 1},
        "webhooks": [{"url": receiver.url, "secret": SECRET, "events": ["COMPLETED"]}],
    }  # fmt: skip
    answers = [await api.post("/definitions", json=definition)]
    assert answers[0].status_code == 201, answers[0].text
    assert answers[0].json()["webhooks"] == [{"url": receiver.url, "events": ["COMPLETED"], "has_secret": True}]
    answers.append(await api.post("/definitions", json=definition))
    assert answers[-1].status_code == 200  # identical re-post
    changed = await api.post(
        "/definitions", json={**definition, "webhooks": [{**definition["webhooks"][0], "secret": "x"}]}
    )
    # Not part of a version's content (answers cannot show it): the stored version and its secret stay as they were.
    assert changed.status_code == 200 and changed.json()["created_at"] == answers[0].json()["created_at"]
    own: dict[str, Any] = {"url": receiver.url, "secret": SECRET + "-run", "events": ["STARTED"]}
    created = await api.post(f"/definitions/{name}/runs", json={"webhooks": [own]})
    assert created.status_code == 201, created.text
    run = created.json()
    # The run's own webhook adds to the definition's.
    assert [(h["events"], h["has_secret"]) for h in run["webhooks"]] == [(["COMPLETED"], True), (["STARTED"], True)]
    await complete(api, worker, run["id"])
    await settled(api, run["id"], 2)
    for path in (
        f"/definitions/{name}", "/definitions", "/definitions?all_versions=true", f"/definitions/{name}/versions",
        f"/runs/{run['id']}", f"/runs?op_definition={name}", f"/runs/{run['id']}/deliveries",
        f"/runs/{run['id']}/attempts",
    ):  # fmt: skip
        response = await api.get(path)
        assert response.status_code == 200, (path, response.text)
        answers.append(response)
    for answer in [*answers, created, changed]:
        assert SECRET not in answer.text, answer.request.url
    signed = {r.headers["x-gyoza-event"]: r for r in receiver.received}
    completed, started = signed["COMPLETED"], signed["STARTED"]
    assert completed.headers["x-gyoza-signature"] == expected_signature(
        completed.headers["x-gyoza-timestamp"], completed.body
    )
    # Each webhook signs with its own secret.
    assert started.headers["x-gyoza-signature"] == expected_signature(
        started.headers["x-gyoza-timestamp"], started.body, own["secret"]
    )


@pytest.mark.parametrize(
    ("webhooks", "field"),
    [
        ([{"url": "ftp://files.example.com/in"}], "webhooks.0.url"),
        ([{"url": "/relative/path"}], "webhooks.0.url"),
        ([{"url": "https://hooks.example.com/x", "events": ["DONE"]}], "webhooks.0.events.0"),
        ([{"url": "https://hooks.example.com/x", "events": []}], "webhooks.0.events"),
        ([{"url": "https://hooks.example.com/x", "events": ["FAILED", "FAILED"]}], "webhooks.0.events"),
        ([{"url": "https://hooks.example.com/x", "secret": ""}], "webhooks.0.secret"),
        ([{"url": "https://hooks.example.com/x", "token": "t"}], "webhooks.0.token"),
        ([{"url": f"https://hooks.example.com/{n}"} for n in range(6)], "webhooks"),
    ],
)
async def test_bad_webhooks_are_refused_and_nothing_is_stored(
    api: httpx.AsyncClient, webhooks: list[dict[str, Any]], field: str
) -> None:
    name = f"bad-hooks-{uuid.uuid4().hex[:8]}"
    refused = [
        await api.post("/definitions", json={"name": name, "version": "1", "image": "sim/op:1", "webhooks": webhooks}),
        await api.post("/runs", json={"image": "sim/op:1", "labels": {"case": name}, "webhooks": webhooks}),
    ]
    for response in refused:
        assert response.status_code == 400, response.text
        assert field in [d["field"] for d in response.json()["error"]["details"]], response.text
    assert (await api.get(f"/definitions/{name}")).status_code == 404
    listed = await api.get("/runs", params={"label": f"case:{name}"})
    assert listed.status_code == 200 and listed.json()["data"] == []


async def test_the_sdk_and_the_cli_show_the_deliveries(
    api: httpx.AsyncClient, worker: SimWorker, receiver: Receiver, hooks_cluster: Cluster, tmp_path: Path
) -> None:
    run = await create_run(api, worker, [{"url": receiver.url, "events": ["CREATED"]}])
    await settled(api, run["id"], 1)
    async with AsyncGyozaClient(hooks_cluster.url, api_key=API_KEY) as client:
        [delivery] = await client.deliveries(run["id"])
        assert (delivery.id, delivery.state.value, delivery.attempts[0].status_code) == ("1-0", "DELIVERED", 200)
        again = await client.redeliver(run["id"], delivery.id)
        assert again.state.value == "PENDING"
        with pytest.raises(NotFound):
            await client.redeliver(run["id"], "42-0")
    await until(lambda: len(receiver.answered(200)) == 2, 20, what="the redelivery")
    server = hooks_cluster.servers[0]
    listed = ok(gyoza_cli(server, tmp_path, "runs", "deliveries", run["id"], "--json"))
    assert [d["id"] for d in json.loads(listed)["data"]] == ["1-0"]
    table = ok(gyoza_cli(server, tmp_path, "runs", "deliveries", run["id"]))
    assert "1-0" in table and "CREATED" in table and receiver.url in table


async def test_with_two_servers_each_delivery_is_made_once(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> None:
    pair = await Cluster(tmp_path_factory.mktemp("webhooks-pair"), servers=2, GYOZA_WEBHOOK_BACKOFF="0.05").start()
    try:
        runs = []
        for server in pair.servers:  # created through either replica; the leader's outbox queues them all
            async with pair.client(server.url) as http:
                for _ in range(5):
                    body = {
                        "image": "sim/op:1",
                        "tags": [unique_tag()],
                        "webhooks": [{"url": receiver.url, "events": ["CREATED"]}],
                    }
                    response = await http.post("/runs", json=body)
                    assert response.status_code == 201, response.text
                    runs.append(response.json()["id"])
        async with pair.client() as http:
            for run_id in runs:
                [delivery] = await settled(http, run_id, 1)
                assert delivery["state"] == "DELIVERED" and len(delivery["attempts"]) == 1
    finally:
        pair.stop()
    # Both replicas consume the queue; each delivery reached the receiver once.
    assert sorted(r.headers["x-gyoza-delivery"] for r in receiver.received) == sorted(
        f"{run_id}.1-0" for run_id in runs
    )
