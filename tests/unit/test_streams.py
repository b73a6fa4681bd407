"""The pieces behind the live streams, below the HTTP boundary: the fan-out hub's watches and doorbells (bounded
memory for any reader), the run stream's messages over the in-memory bus, the SSE parser, the resume cursor, and
how a worker cuts its live log lines into shipments."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from gyoza.bus.memory import MemoryBus
from gyoza.client._sse import SseMessage, SseParser, StreamPlan, run_item
from gyoza.core import statemachine as sm
from gyoza.schema import (
    MAX_LOG_CHUNK_CHARS,
    AdHocRunIn,
    EventType,
    LogChunkIn,
    RunRecord,
    RunStreamEnd,
    RunStreamEvent,
    StreamCursor,
)
from gyoza.services.definitions import DefinitionService
from gyoza.services.livelogs import LiveLogs
from gyoza.services.livestreams import RunStream, until_terminal
from gyoza.services.runs import RunService
from gyoza.services.streams import Doorbells, StreamHub
from gyoza.worker.logchunks import log_chunks

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def record(events: int, run_id: str = "r1") -> RunRecord:
    base = RunRecord(id=run_id, image="x", created_at=NOW, updated_at=NOW, attempts=[sm.new_attempt(1, NOW)])
    for n in range(events):
        sm.add_event(base, EventType.INFO, NOW, f"e{n}")
    return base


# --- the hub -------------------------------------------------------------------------------------------------------


async def test_a_watch_holds_only_the_latest_version_however_many_come() -> None:
    hub = StreamHub(MemoryBus())
    with hub.watch("r1") as watch:
        for revision in range(1, 10_001):
            await hub.on_run(record(0), revision)
        latest, rang = watch.take()
        assert latest is not None and rang == set()
        assert watch.take() == (None, set()), "one version held, handed out once"
        await hub.on_run(record(3), 10_002)
        await hub.on_run(record(1), 5)  # an older version never replaces a newer one
        latest, _ = watch.take()
        assert latest is not None and len(latest.events) == 3
    assert hub.open_watches() == 0, "leaving the block unregisters the watch"


async def test_a_watch_wakes_on_a_version_or_a_ring_and_reports_a_quiet_interval() -> None:
    hub = StreamHub(MemoryBus())
    with hub.watch("r1") as watch, hub.watch("r2") as other:
        assert not await watch.wait(0.01)
        await hub.on_run(record(1, "r2"), 1)
        assert not await watch.wait(0.01) and await other.wait(0.01), "only the run's own watches"
        watch.ring(2)
        watch.ring(3)
        assert await watch.wait(0.01)
        assert watch.take() == (None, {2, 3})


async def test_doorbells_share_one_subscription_per_subject_and_drop_it_with_the_last() -> None:
    bus = MemoryBus()
    bells = Doorbells(bus)
    rung: list[str] = []
    async with (
        bells.follow("a.b", lambda p: rung.append("first")),
        bells.follow("a.b", lambda p: rung.append("second")),
    ):
        assert bells.subjects() == 1
        await bus.publish("a.b", b"x")
        await asyncio.sleep(0)  # the memory bus hands messages to a task
        await asyncio.sleep(0)
        assert sorted(rung) == ["first", "second"]
    assert bells.subjects() == 0
    await bus.publish("a.b", b"x")
    await asyncio.sleep(0)
    assert len(rung) == 2, "nobody rings once every follower left"


# --- the run stream over the in-memory bus -------------------------------------------------------------------------


@pytest.fixture
async def services() -> tuple[RunService, RunStream, StreamHub]:
    bus = MemoryBus()
    runs = RunService(bus, DefinitionService(bus))
    hub = StreamHub(bus)
    return runs, RunStream(runs, LiveLogs(bus, runs), hub), hub


async def test_the_run_stream_replays_past_the_cursor_then_ends_with_the_run(
    services: tuple[RunService, RunStream, StreamHub],
) -> None:
    runs, stream, hub = services
    created, _ = await runs.create_adhoc(AdHocRunIn(image="x"), None)
    cancelled = await runs.cancel(created.id)
    kinds = [(m.kind, m.id) async for m in stream.messages(created.id, StreamCursor(1, 0), 0.01) if m is not None]
    assert kinds == [("event", "2.0"), ("run", "2.0"), ("end", "2.0")]
    assert cancelled.events[-1].id == 2
    assert hub.open_watches() == 0 and hub.doorbells.subjects() == 0, "the stream's watch and doorbell are gone"


async def test_the_run_stream_stops_at_its_deadline_with_heartbeats_before(
    services: tuple[RunService, RunStream, StreamHub],
) -> None:
    runs, stream, _ = services
    created, _ = await runs.create_adhoc(AdHocRunIn(image="x"), None)
    deadline = asyncio.get_running_loop().time() + 0.1
    got = [m async for m in stream.messages(created.id, StreamCursor(), 0.02, deadline)]
    assert None in got and all(m is None or m.kind != "end" for m in got)


async def test_until_terminal_returns_the_run_once_it_ends(services: tuple[RunService, RunStream, StreamHub]) -> None:
    runs, _, hub = services
    created, _ = await runs.create_adhoc(AdHocRunIn(image="x"), None)

    async def cancel_soon() -> None:
        cancelled = await runs.cancel(created.id)
        await hub.on_run(cancelled, 99)  # the run feed's delivery

    waiting = asyncio.create_task(until_terminal(runs, hub, created, 30))
    await asyncio.sleep(0)
    await cancel_soon()
    assert (await waiting).state.value == "CANCELLED"
    assert (await until_terminal(runs, hub, created, 0)) is created, "wait=0 answers at once"


# --- SSE parsing and the cursor ------------------------------------------------------------------------------------


def parse(text: str) -> list[SseMessage]:
    parser, found = SseParser(), []
    for line in text.splitlines():
        message = parser.line(line)
        if message is not None:
            found.append(message)
    return found


def test_the_parser_reads_the_event_stream_format() -> None:
    text = (
        ": stream open\n\n"
        'id: 1.0\nevent: event\ndata: {"a":1}\n\n'
        ": keep-alive\n\n"
        "data:two\ndata: lines\n\n"  # no id: the last one stays
        "id: 2.5\nevent:log\ndata: x\nretry: 100\nunknown: field\n\n"
        "event: empty\n\n"  # no data: nothing is dispatched
    )
    assert parse(text) == [
        SseMessage("event", '{"a":1}', "1.0"),
        SseMessage("message", "two\nlines", "1.0"),
        SseMessage("log", "x", "2.5"),
    ]


def test_the_cursor_reads_both_forms_and_refuses_others() -> None:
    assert StreamCursor.parse("7") == StreamCursor(7, 0)
    assert StreamCursor.parse(" 7.42 ") == StreamCursor(7, 42)
    assert str(StreamCursor(7, 42)) == "7.42"
    for bad in ("", "x", "-1", "1.", ".1", "1.2.3", "1e3", "\u0661"):
        assert StreamCursor.parse(bad) is None, bad


def test_a_plan_notes_ids_and_finishes_at_the_end_item() -> None:
    plan: StreamPlan[object] = StreamPlan("/p", run_item, ends=lambda item: isinstance(item, RunStreamEnd))
    parser = SseParser()
    event = '{"id":1,"attempt":1,"type":"CREATED","t":"2025-06-01T00:00:00Z","msg":"","payload":{},"state":"PENDING"}'
    items = [plan.take(parser, line) for line in ("id: 1.0", "event: event", f"data: {event}", "")]
    assert isinstance(items[-1], RunStreamEvent) and plan.last_event_id == "1.0" and not plan.finished
    assert plan.take(parser, "event: future-kind") is None
    assert plan.take(parser, "data: {}") is None and plan.take(parser, "") is None, "a kind it does not know"
    assert [plan.broke() for _ in range(6)] == [True] * 5 + [False], "a few reconnections, then it gives up"


# --- live log shipments --------------------------------------------------------------------------------------------


def test_log_lines_are_cut_into_bounded_shipments_counting_whole_lines() -> None:
    lines = [b"a" * 10 + b"\n"] * 3
    assert log_chunks(lines, b"") == [("aaaaaaaaaa\n" * 3, 3)]
    assert log_chunks([], b"") == []
    assert log_chunks([], b"[cut]\n") == [("[cut]\n", 0)]
    huge = b"x" * (MAX_LOG_CHUNK_CHARS * 2 + 5) + b"\n"
    pieces = log_chunks([b"first\n", huge], b"")
    assert "".join(text for text, _ in pieces) == "first\n" + huge.decode()
    assert all(len(text) <= MAX_LOG_CHUNK_CHARS for text, _ in pieces)
    assert sum(count for _, count in pieces) == 2, "a line counts once, with its last piece"
    for text, _ in pieces:
        LogChunkIn(attempt=1, worker_id="w", chunk=1, text=text)  # every piece is a valid shipment


async def test_a_stream_the_client_left_lets_go_of_its_watch_and_doorbell_at_once(
    services: tuple[RunService, RunStream, StreamHub],
) -> None:
    """Quart closes a response's body when the client leaves; the run stream's watch and doorbell go with it."""
    from gyoza.server.sse import event_stream

    runs, stream, hub = services
    created, _ = await runs.create_adhoc(AdHocRunIn(image="x"), None)
    response = event_stream(stream.messages(created.id, StreamCursor(), 30))
    assert response.mimetype == "text/event-stream" and response.headers["Cache-Control"] == "no-cache"
    async with response.response as body:  # as Quart sends it
        chunks = []
        async for chunk in body:
            chunks.append(chunk)
            if b"event: run" in chunk:
                assert hub.open_watches() == 1 and hub.doorbells.subjects() == 1
                break  # the client left
    assert chunks[0] == b": stream open\n\n" and b"event: event" in chunks[1]
    assert hub.open_watches() == 0 and hub.doorbells.subjects() == 0
