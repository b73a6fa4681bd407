"""Live streams over HTTP (issue 11): ``GET /runs/{id}/stream`` and ``GET /topics/{topic}/stream`` as Server-Sent
Events, and the worker's live log lines (``POST /runs/{id}/logs`` and over NATS). (``?wait=`` on run creation:
tests/test_run_wait.py.)

A private cluster (real nats-server and Gyoza server) with simulated workers that report events and ship log lines
the way a real worker does. Every resume test drops a connection mid-stream, writes more while nobody listens, and
reconnects with ``Last-Event-ID``: what the two connections got together must be exactly GET /runs/{id}/events
(and the shipped log lines), once each, in order.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import nats
import pytest

from gyoza.bus import names
from gyoza.client import AsyncGyozaClient, GyozaClient
from gyoza.client._sse import SseMessage, SseParser
from gyoza.schema import RunStreamEnd, RunStreamEvent, RunStreamLog, RunStreamRun
from tests.api_checks import error_of, fields
from tests.processes import API_KEY
from tests.simworker import Cluster, Fleet, SimWorker, all_events, create_run, wait_run
from tests.waiting import until


@dataclass
class Received:
    """What one connection of a stream delivered."""

    messages: list[SseMessage] = field(default_factory=list)
    comments: int = 0

    def of(self, kind: str) -> list[SseMessage]:
        return [m for m in self.messages if m.event == kind]

    @property
    def last_id(self) -> str | None:
        ids = [m.id for m in self.messages if m.id is not None]
        return ids[-1] if ids else None


async def read_stream(
    http: httpx.AsyncClient, path: str, stop: Any = None, headers: dict[str, str] | None = None, **params: Any
) -> Received:
    """Read a stream until the server closes it, or until ``stop(received)`` is true (then drop the connection)."""
    received = Received()
    async with http.stream("GET", path, params=params, headers=headers or {}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        parser = SseParser()
        async for line in response.aiter_lines():
            if line.startswith(":"):
                received.comments += 1
            message = parser.line(line)
            if message is not None:
                received.messages.append(message)
            if stop is not None and stop(received):
                break
    return received


async def running_run(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> tuple[SimWorker, str]:
    worker = await fleet.add("streamer", tags=[tag])
    run = await create_run(http, [tag])
    await claimed(worker)
    assert (await worker.report(run["id"], 1, "STARTED", "started")).status_code == 200
    return worker, run["id"]


async def claimed(worker: SimWorker) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await until(worker.claim, what=f"an assignment for {worker.worker_id}")
    return found


async def ship(worker: SimWorker, run_id: str, chunk: int, text: str, attempt: int = 1) -> httpx.Response:
    body = {"attempt": attempt, "worker_id": worker.worker_id, "chunk": chunk, "text": text}
    return await worker.http.post(f"/runs/{run_id}/logs", json=body)


def event_ids(received: Received) -> list[int]:
    return [json.loads(m.data)["id"] for m in received.of("event")]


def log_texts(received: Received) -> list[str]:
    return [json.loads(m.data)["text"] for m in received.of("log")]


# --- run streams ---------------------------------------------------------------------------------------------------


async def test_a_run_stream_replays_follows_live_and_ends_with_the_run(
    cluster: Cluster, http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    worker, run_id = await running_run(http, fleet, tag)
    assert (await ship(worker, run_id, 1, "2025-01-01T00:00:00.000000Z stdout loading\n")).status_code == 201

    async def work() -> None:
        await worker.report(run_id, 1, "PROGRESS", 50)
        assert (await ship(worker, run_id, 2, "2025-01-01T00:00:01.000000Z stderr half way\n")).status_code == 201
        await worker.report(run_id, 1, "COMPLETED", payload={"outputs": {"label": "cat"}})

    def started(received: Received) -> bool:
        return len(received.of("log")) >= 1  # the replay is in: the rest happens while the stream is open

    async with cluster.client() as reader:
        first = await read_stream(reader, f"/runs/{run_id}/stream", stop=started)
        writer = asyncio.create_task(work())
        rest = await read_stream(reader, f"/runs/{run_id}/stream", headers={"Last-Event-ID": first.last_id or ""})
        await writer

    events = await all_events(http, run_id)
    assert event_ids(first) + event_ids(rest) == [e["id"] for e in events]
    assert log_texts(first) + log_texts(rest) == [
        "2025-01-01T00:00:00.000000Z stdout loading\n",
        "2025-01-01T00:00:01.000000Z stderr half way\n",
    ]
    [end] = rest.of("end")
    assert rest.messages[-1] is end, "end is the last message; then the server closes the stream"
    assert json.loads(end.data)["state"] == "COMPLETED" and json.loads(end.data)["outputs"] == {"label": "cat"}
    assert first.of("run") and json.loads(first.of("run")[0].data)["state"] == "RUNNING"


async def test_resuming_with_last_event_id_loses_and_repeats_nothing(
    cluster: Cluster, http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    worker, run_id = await running_run(http, fleet, tag)
    for n in range(1, 4):
        await worker.report(run_id, 1, "INFO", f"step {n}")
        assert (await ship(worker, run_id, n, f"line {n}\n")).status_code == 201

    connections: list[Received] = []
    last_id: str | None = None
    next_n = 4
    async with cluster.client() as reader:
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            # Each connection is dropped after two messages; meanwhile the worker writes more, nobody listening.
            got = await read_stream(
                reader, f"/runs/{run_id}/stream", headers=headers, stop=lambda r: len(r.messages) >= 3
            )
            connections.append(got)
            last_id = got.last_id or last_id
            if got.of("end"):
                break
            if next_n <= 8:
                await worker.report(run_id, 1, "INFO", f"step {next_n}")
                assert (await ship(worker, run_id, next_n, f"line {next_n}\n")).status_code == 201
                next_n += 1
            elif next_n == 9:
                await worker.report(run_id, 1, "COMPLETED", payload={"outputs": {}})
                next_n += 1

    assert len(connections) > 3, "the stream was really resumed several times"
    sent_ids = [i for got in connections for i in event_ids(got)]
    assert sent_ids == [e["id"] for e in await all_events(http, run_id)], "every event exactly once, in order"
    assert [t for got in connections for t in log_texts(got)] == [f"line {n}\n" for n in range(1, 9)]


async def test_a_bare_event_id_resumes_the_events_and_sends_every_log_line(
    http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    worker, run_id = await running_run(http, fleet, tag)
    assert (await ship(worker, run_id, 1, "only line\n")).status_code == 201
    await worker.report(run_id, 1, "FAILED", payload={"reason": "EXIT_CODE", "exit_code": 3})
    got = await read_stream(http, f"/runs/{run_id}/stream", headers={"Last-Event-ID": "1"})
    assert event_ids(got) == [e["id"] for e in await all_events(http, run_id) if e["id"] > 1]
    assert log_texts(got) == ["only line\n"]
    assert json.loads(got.of("end")[0].data)["state"] == "FAILED"


async def test_a_shipment_sent_again_is_stored_once(http: httpx.AsyncClient, fleet: Fleet, tag: str) -> None:
    worker, run_id = await running_run(http, fleet, tag)
    first = await ship(worker, run_id, 1, "once\n")
    again = await ship(worker, run_id, 1, "once\n")
    assert first.status_code == again.status_code == 201
    assert first.json()["seq"] == again.json()["seq"]
    await worker.report(run_id, 1, "CANCELLED")
    assert log_texts(await read_stream(http, f"/runs/{run_id}/stream")) == ["once\n"]


async def test_heartbeats_keep_a_quiet_stream_open_and_timeout_closes_it_without_end(
    http: httpx.AsyncClient, tag: str
) -> None:
    run = await create_run(http, [tag])  # no worker has the tag: it stays PENDING, quiet
    got = await read_stream(http, f"/runs/{run['id']}/stream", heartbeat="0.05", timeout="1")
    assert got.comments >= 3, "the open comment and heartbeats"
    assert not got.of("end") and event_ids(got) == [1]


async def test_a_reader_that_stalls_gets_everything_once_it_reads_again(
    cluster: Cluster, http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    """A reader that stops reading (tiny receive buffer, nothing read) while the run writes a lot holds the server to
    the latest version of the run, not a queue of them: when it reads again it gets every event, none twice."""
    worker, run_id = await running_run(http, fleet, tag)
    host, port = urlsplit(cluster.url).hostname, urlsplit(cluster.url).port
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    request = f"GET /runs/{run_id}/stream HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {API_KEY}\r\nConnection: close\r\n\r\n"
    sock.sendall(request.encode())
    for n in range(150):
        await worker.report(run_id, 1, "INFO", f"{n:04d} " + "x" * 500)
    await worker.report(run_id, 1, "COMPLETED", payload={"outputs": {}})
    raw = await asyncio.to_thread(_read_until_closed, sock)
    body = raw.split(b"\r\n\r\n", 1)[1].decode()
    parser, messages = SseParser(), []
    for line in _unchunk(body).splitlines():
        message = parser.line(line)
        if message is not None:
            messages.append(message)
    ids = [json.loads(m.data)["id"] for m in messages if m.event == "event"]
    assert ids == [e["id"] for e in await all_events(http, run_id)]
    assert messages[-1].event == "end"


def _read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    chunks = []
    with sock:
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def _unchunk(body: str) -> str:
    """HTTP/1.1 chunked transfer coding off a raw body."""
    raw, out = body.encode(), []
    while raw:
        size_line, _, raw = raw.partition(b"\r\n")
        size = int(size_line.strip() or b"0", 16)
        if size == 0:
            break
        out.append(raw[:size])
        raw = raw[size + 2 :]
    return b"".join(out).decode()


async def test_errors_before_the_stream_starts_are_json(http: httpx.AsyncClient, tag: str) -> None:
    run = await create_run(http, [tag])
    missing = await http.get(f"/runs/{uuid.uuid4()}/stream")
    error_of(missing, 404, "RUN_NOT_FOUND")
    for bad in ("x", "1.2.3", "-1", "1.x"):
        response = await http.get(f"/runs/{run['id']}/stream", headers={"Last-Event-ID": bad})
        assert fields(error_of(response, 400, "INVALID_REQUEST")) == {"Last-Event-ID"}, bad
    bad_query = await http.get(f"/runs/{run['id']}/stream", params={"last_event_id": "nope"})
    assert fields(error_of(bad_query, 400)) == {"Last-Event-ID"}
    for name, value in (("heartbeat", "0"), ("heartbeat", "nan"), ("timeout", "-1"), ("timeout", "1e3")):
        response = await http.get(f"/runs/{run['id']}/stream", params={name: value})
        assert fields(error_of(response, 400)) == {name}, (name, value)
    assert fields(error_of(await http.get(f"/runs/{run['id']}/stream", params={"bogus": "1"}), 400)) == {"bogus"}


async def test_only_the_worker_holding_the_attempt_ships_its_lines(
    http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    worker, run_id = await running_run(http, fleet, tag)
    other = await fleet.add("other", tags=["elsewhere-" + tag])
    error_of(await ship(other, run_id, 1, "forged\n"), 409, "STALE_ATTEMPT")
    error_of(await ship(worker, run_id, 1, "old\n", attempt=2), 409, "STALE_ATTEMPT")
    bad = await worker.http.post(f"/runs/{run_id}/logs", json={"attempt": 1, "worker_id": worker.worker_id})
    assert fields(error_of(bad, 400)) == {"chunk", "text"}
    error_of(await ship(worker, str(uuid.uuid4()), 1, "x\n"), 404, "RUN_NOT_FOUND")
    await worker.report(run_id, 1, "COMPLETED", payload={"outputs": {}})
    assert log_texts(await read_stream(http, f"/runs/{run_id}/stream")) == []


async def test_nats_mode_workers_ship_lines_over_nats(
    cluster: Cluster, http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    worker, run_id = await running_run(http, fleet, tag)
    nc = await nats.connect(cluster.nats_url)
    try:
        body = {"run_id": run_id, "attempt": 1, "worker_id": worker.worker_id, "chunk": 1, "text": "over nats\n"}
        reply = await nc.request(names.log_reports_subject(worker.worker_id), json.dumps(body).encode(), timeout=10)
        assert json.loads(reply.data)["seq"] > 0
        forged = await nc.request(names.log_reports_subject("someone-else"), json.dumps(body).encode(), timeout=10)
        assert json.loads(forged.data)["error"]["details"][0]["field"] == "worker_id"
    finally:
        await nc.close()
    await worker.report(run_id, 1, "COMPLETED", payload={"outputs": {}})
    assert log_texts(await read_stream(http, f"/runs/{run_id}/stream")) == ["over nats\n"]


# --- the SDK -------------------------------------------------------------------------------------------------------


async def test_the_sdk_streams_typed_items_sync_and_async(
    cluster: Cluster, http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    worker, run_id = await running_run(http, fleet, tag)
    assert (await ship(worker, run_id, 1, "hello\n")).status_code == 201
    await worker.report(run_id, 1, "COMPLETED", payload={"outputs": {"n": 1}})

    async with AsyncGyozaClient(cluster.url, API_KEY) as client:
        items = [item async for item in client.stream(run_id)]
        # Resuming from an item's id gives what came after it, and nothing before.
        resumed = [item async for item in client.stream(run_id, items[1].id)]
    with GyozaClient(cluster.url, API_KEY) as sync_client:
        sync_items = await asyncio.to_thread(lambda: list(sync_client.stream(run_id)))
    assert items == sync_items
    assert [i.event.id for i in items if isinstance(i, RunStreamEvent)] == [
        e["id"] for e in await all_events(http, run_id)
    ]
    assert [i.log.text for i in items if isinstance(i, RunStreamLog)] == ["hello\n"]
    assert isinstance(items[-1], RunStreamEnd) and items[-1].run.outputs == {"n": 1}
    assert any(isinstance(i, RunStreamRun) for i in items)
    assert [i for i in resumed if not isinstance(i, RunStreamRun)] == [
        i for i in items[2:] if not isinstance(i, RunStreamRun)
    ]


async def test_the_sdk_raises_the_servers_refusal(cluster: Cluster) -> None:
    from gyoza.errors import InvalidRequest, RunNotFound

    async with AsyncGyozaClient(cluster.url, API_KEY) as client:
        with pytest.raises(RunNotFound):
            [item async for item in client.stream(str(uuid.uuid4()))]
        with pytest.raises(InvalidRequest):
            [item async for item in client.stream(str(uuid.uuid4()), last_event_id="bad")]


# --- topic streams -------------------------------------------------------------------------------------------------


async def topic_run(http: httpx.AsyncClient, tag: str, topic: str) -> str:
    name = "topical-" + uuid.uuid4().hex[:8]
    definition = {"name": name, "version": "1", "image": "sim/op:1", "tags": [tag], "event_delivery": {"topic": topic}}
    assert (await http.post("/definitions", json=definition)).status_code == 201
    response = await http.post(f"/definitions/{name}/runs", json={})
    assert response.status_code == 201
    run_id: str = response.json()["id"]
    return run_id


async def test_a_topic_stream_resumes_by_its_sequence(
    cluster: Cluster, http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    topic = "t" + uuid.uuid4().hex[:10]
    worker = await fleet.add("topical", tags=[tag])
    run_id = await topic_run(http, tag, topic)
    await claimed(worker)
    await worker.report(run_id, 1, "STARTED")

    async with cluster.client() as reader:
        first = await read_stream(reader, f"/topics/{topic}/stream", stop=lambda r: len(r.messages) >= 2)
        for n in range(3):
            await worker.report(run_id, 1, "INFO", f"n{n}")
        await worker.report(run_id, 1, "COMPLETED", payload={"outputs": {}})
        await wait_run(http, run_id, state="COMPLETED")

        async def feed() -> list[dict[str, Any]]:
            page = (await http.get(f"/topics/{topic}/events")).json()["data"]
            return page if page and page[-1]["type"] == "COMPLETED" else []

        expected: list[dict[str, Any]] = await until(feed, what="every event in the topic feed")
        rest = await read_stream(
            reader, f"/topics/{topic}/stream", headers={"Last-Event-ID": first.last_id or ""},
            stop=lambda r: len(first.messages) + len(r.messages) >= len(expected),
        )  # fmt: skip
    got = [json.loads(m.data) for m in first.messages + rest.messages]
    assert [g["cursor"] for g in got] == [e["cursor"] for e in expected]
    assert [m.id for m in first.messages + rest.messages] == [str(e["cursor"]) for e in expected]
    assert [g["type"] for g in got][-1] == "COMPLETED"


async def test_a_topic_stream_refuses_a_bad_topic_or_cursor(http: httpx.AsyncClient) -> None:
    assert fields(error_of(await http.get("/topics/a.b/stream"), 400)) == {"topic"}
    bad = await http.get("/topics/fine/stream", headers={"Last-Event-ID": "1.2"})
    assert fields(error_of(bad, 400)) == {"Last-Event-ID"}
