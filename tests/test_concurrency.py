"""Concurrent writers over HTTP: compare-and-set never loses an acknowledged update nor makes an illegal state."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from typing import Any

import h11
import httpx
import nats.js.errors
from nats.js import JetStreamContext

from tests.processes import API_KEY, GyozaServer
from tests.scheduling import assign_run

RUNS_STREAM = "KV_gyoza_runs"


async def running_run(client: httpx.AsyncClient, nats_url: str, image: str = "busybox:1") -> str:
    """A RUNNING run on a made-up worker. Its tag matches no worker, so the scheduler never places it itself."""
    body = {"image": image, "inputs": {}, "tags": ["nowhere-" + uuid.uuid4().hex[:8]]}
    created = await client.post("/runs", json=body)
    assert created.status_code == 201, created.text
    run_id: str = created.json()["id"]
    await start_attempt(client, nats_url, run_id, 1)
    return run_id


def ghost(run_id: str, attempt: int) -> str:
    """The made-up worker an attempt is assigned to (each attempt its own)."""
    return f"ghost-{run_id[:8]}-{attempt}"


def held(run_id: str) -> dict[str, Any]:
    """The fields of a report by the worker holding attempt 1."""
    return {"attempt": 1, "worker_id": ghost(run_id, 1)}


async def start_attempt(client: httpx.AsyncClient, nats_url: str, run_id: str, attempt: int) -> None:
    await assign_run(nats_url, run_id, ghost(run_id, attempt))
    body = {"attempt": attempt, "worker_id": ghost(run_id, attempt), "type": "STARTED"}
    started = await client.post(f"/runs/{run_id}/events", json=body)
    assert started.status_code == 200, started.text


async def events_of(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/runs/{run_id}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    return events


async def burst(server: GyozaServer, requests: list[tuple[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """POST each (path, body) on its own connection, all written before any answer is read: (status, json) each.

    httpx sends one request after another from this process, so a fast server may finish the first before the next
    arrives; requests written in full up front reach the server together and make the writes really overlap.
    """
    host, port = server.url.removeprefix("http://").split(":")
    connections = await asyncio.gather(*(asyncio.open_connection(host, int(port)) for _ in requests))
    states = [h11.Connection(h11.CLIENT) for _ in requests]
    for (_, writer), state, (path, body) in zip(connections, states, requests, strict=True):
        data = json.dumps(body).encode()
        headers = [("Host", host), ("X-API-Key", API_KEY), ("Content-Type", "application/json"),
                   ("Content-Length", str(len(data))), ("Connection", "close")]  # fmt: skip
        writer.write(state.send(h11.Request(method="POST", target=path, headers=headers)) or b"")
        writer.write(state.send(h11.Data(data=data)) or b"")
        writer.write(state.send(h11.EndOfMessage()) or b"")
    await asyncio.gather(*(writer.drain() for _, writer in connections))
    return await asyncio.gather(*(read_response(r, w, s) for (r, w), s in zip(connections, states, strict=True)))


async def read_response(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: h11.Connection
) -> tuple[int, dict[str, Any]]:
    status, body = 0, b""
    try:
        while True:
            event = state.next_event()
            if event is h11.NEED_DATA:
                state.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, json.loads(body)
    finally:
        writer.close()
        await writer.wait_closed()


def assert_gapless(events: list[dict[str, Any]]) -> None:
    assert [e["id"] for e in events] == list(range(1, len(events) + 1)), "event ids must be 1, 2, 3... with no gap"


async def test_fifty_concurrent_writes_to_one_running_run(
    client: httpx.AsyncClient, server: GyozaServer, nats_url: str
) -> None:
    run_id = await running_run(client, nats_url)
    kinds: list[tuple[str, Any]] = [("PROGRESS", n) for n in range(1, 31)]
    kinds += [("INFO", f"note {n}") for n in range(13)]
    kinds += [("COMPLETED", None)] + [("CANCEL", None)] * 6
    random.shuffle(kinds)
    assert len(kinds) == 50

    def request(kind: str, msg: Any) -> tuple[str, Any]:
        if kind == "CANCEL":
            return f"/runs/{run_id}/cancel", None
        if kind == "COMPLETED":
            return f"/runs/{run_id}/events", {**held(run_id), "type": kind, "payload": {"outputs": {"answer": 42}}}
        return f"/runs/{run_id}/events", {**held(run_id), "type": kind, "msg": msg}

    responses = await burst(server, [request(kind, msg) for kind, msg in kinds])
    outcomes = list(zip(kinds, responses, strict=True))
    for (kind, _), (status, body) in outcomes:
        assert status in (200, 409), f"{kind}: {status} {body}"
        if status == 409:
            # Refused only because the run had already finished, never because of a lost race.
            assert body["error"]["code"] == "INVALID_TRANSITION", body
            assert "COMPLETED" in body["error"]["message"]
    # Nothing can stop a RUNNING run's COMPLETED: a cancel only asks the worker.
    [(completed_status, completed_body)] = [r for (kind, _), r in outcomes if kind == "COMPLETED"]
    assert completed_status == 200, completed_body

    run = (await client.get(f"/runs/{run_id}")).json()
    assert run["state"] == "COMPLETED"
    assert run["outputs"] == {"answer": 42}
    assert run["progress"] == 100
    events = await events_of(client, run_id)
    assert_gapless(events)
    assert [e["type"] for e in events[:3]] == ["CREATED", "ASSIGNED", "STARTED"]
    [completed_event] = [e for e in events if e["type"] == "COMPLETED"]
    assert completed_event is events[-1], "nothing may follow COMPLETED"

    def accepted(kind: str) -> list[Any]:
        return sorted(str(msg) for (k, msg), (status, _) in outcomes if k == kind and status == 200)

    for kind in ("PROGRESS", "INFO"):
        recorded = sorted(str(e["msg"]) for e in events if e["type"] == kind and e["msg"] != "cancel requested")
        assert recorded == accepted(kind), f"every acknowledged {kind} exactly once, refused ones never"
    assert all(e["state"] == "RUNNING" for e in events[2:-1])

    cancelled = [body for (kind, _), (status, body) in outcomes if kind == "CANCEL" and status == 200]
    cancel_requests = [e for e in events if e["type"] == "INFO" and e["msg"] == "cancel requested"]
    if cancelled:
        # Cancels are idempotent while RUNNING: however many got 200, one request is recorded.
        assert len(cancel_requests) == 1
        assert all(body["cancel_requested"] and body["state"] == "RUNNING" for body in cancelled)
    else:
        assert cancel_requests == []
    expected = 3 + len(accepted("PROGRESS")) + len(accepted("INFO")) + len(cancel_requests) + 1
    assert len(events) == expected, "an event appeared that no acknowledged request explains"


async def test_concurrent_terminal_events_have_one_winner(
    client: httpx.AsyncClient, server: GyozaServer, nats_url: str
) -> None:
    run_id = await running_run(client, nats_url)
    bodies = {
        "COMPLETED": {**held(run_id), "type": "COMPLETED", "payload": {"outputs": {}}},
        "FAILED": {**held(run_id), "type": "FAILED", "payload": {"reason": "EXIT_CODE", "exit_code": 3}},
        "CANCELLED": {**held(run_id), "type": "CANCELLED"},
    }
    kinds = [kind for kind in bodies for _ in range(10)]
    random.shuffle(kinds)
    responses = await burst(server, [(f"/runs/{run_id}/events", bodies[k]) for k in kinds])
    winners = {kind for kind, (status, _) in zip(kinds, responses, strict=True) if status == 200}
    assert len(winners) == 1, f"more than one terminal event was acknowledged: {winners}"
    [winner] = winners
    for kind, (status, body) in zip(kinds, responses, strict=True):
        # The loser kinds are refused by the state machine; repeats of the winner are idempotent.
        assert status == (200 if kind == winner else 409), body
    run = (await client.get(f"/runs/{run_id}")).json()
    assert run["state"] == winner
    events = await events_of(client, run_id)
    assert_gapless(events)
    assert [e["type"] for e in events] == ["CREATED", "ASSIGNED", "STARTED", winner]


async def test_stale_attempt_write_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, nats_url: str, js: JetStreamContext
) -> None:
    run_id = await running_run(client, nats_url)
    assert (await client.post(f"/runs/{run_id}/cancel")).status_code == 200
    assert (await client.post(f"/runs/{run_id}/events", json={**held(run_id), "type": "CANCELLED"})).status_code == 200
    retried = await client.post(f"/runs/{run_id}/retry")
    assert retried.status_code == 200 and retried.json()["current_attempt"] == 2, retried.text
    # Attempt 2 runs elsewhere: nothing else has a reason to write this run while the old worker talks.
    await start_attempt(client, nats_url, run_id, 2)

    subject = f"$KV.gyoza_runs.{run_id}"
    before_seq = (await js.get_last_msg(RUNS_STREAM, subject)).seq
    before_info = await js.stream_info(RUNS_STREAM, subjects_filter=subject)
    before = (await client.get(f"/runs/{run_id}")).json()
    # The worker of attempt 1 comes back and reports as if nothing happened.
    stale = [
        {**held(run_id), "type": "STARTED"},
        {**held(run_id), "type": "PROGRESS", "msg": 80},
        {**held(run_id), "type": "INFO", "msg": "still here"},
        {**held(run_id), "type": "COMPLETED", "payload": {"outputs": {"x": 1}}},
        {**held(run_id), "type": "FAILED", "payload": {"reason": "EXIT_CODE", "exit_code": 1}},
    ]
    for body in stale:
        response = await client.post(f"/runs/{run_id}/events", json=body)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "STALE_ATTEMPT"
    assert (await js.get_last_msg(RUNS_STREAM, subject)).seq == before_seq, "a stale write reached KV"
    after_info = await js.stream_info(RUNS_STREAM, subjects_filter=subject)
    assert after_info.state.subjects == before_info.state.subjects
    assert (await client.get(f"/runs/{run_id}")).json() == before


async def test_fifty_concurrent_creates_with_one_idempotency_key(
    client: httpx.AsyncClient, js: JetStreamContext, unique_name: str
) -> None:
    key = "idem-" + unique_name
    start_seq = (await js.stream_info(RUNS_STREAM)).state.last_seq
    body = {"image": f"registry.local/{unique_name}:1", "inputs": {"n": 1}}
    responses = await asyncio.gather(
        *(client.post("/runs", json=body, headers={"Idempotency-Key": key}) for _ in range(50))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 49 + [201], statuses
    assert len({r.json()["id"] for r in responses}) == 1
    [run_id] = {r.json()["id"] for r in responses}

    # Every run record written to KV since the burst began: exactly one carries this key.
    with_key: set[str] = set()
    seq = start_seq + 1
    while True:
        try:
            # With a subject, ``next`` skips the sequences of superseded revisions (one message per key is kept).
            msg = await js.get_msg(RUNS_STREAM, seq=seq, subject="$KV.gyoza_runs.>", next=True)
        except nats.js.errors.NotFoundError:
            break  # past the end of the stream
        record = json.loads(msg.data or b"{}")
        if record.get("idempotency_key") == key:
            with_key.add(record["id"])
        seq = int(msg.seq or seq) + 1
    assert with_key == {run_id}
    listed = await client.get("/runs", params={"image": body["image"], "limit": 100})
    assert [run["id"] for run in listed.json()["data"]] == [run_id]
