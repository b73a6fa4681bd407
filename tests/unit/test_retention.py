"""Retention below the HTTP layer (issue 12.5): parsing ``GYOZA_RETENTION``, when a finished run expires and the TTL
its write carries, the kept index's sweep of expiries it never heard of, and the leader-only log cleaner."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from gyoza.bus import names
from gyoza.bus.memory import MemoryBus
from gyoza.core import statemachine as sm
from gyoza.core.retention import stamp_expiry, ttl_seconds
from gyoza.errors import RunNotFound
from gyoza.schema import AdHocRunIn, Retention, RunListQuery, RunRecord, parse_retention
from gyoza.server.index import QueryIndex
from gyoza.server.indexfile import BucketState, IndexFile
from gyoza.server.watch import SWEEP_GRACE_S, IndexedRuns
from gyoza.services.definitions import DefinitionService
from gyoza.services.expiry import ExpiredRunCleaner
from gyoza.services.feed import RunFeed
from gyoza.services.runs import RunService
from gyoza.services.webhooks import LOG_STREAM, log_subject
from gyoza.settings import Settings
from gyoza.supervision import TaskFailures
from tests.waiting import until

RUN = {"image": "busybox", "constraints": {"cpu": 1, "ram_mb": 64}}
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_the_server_default_parses_by_state_and_refuses_what_it_cannot_read() -> None:
    assert parse_retention("completed=7d, FAILED=30d") == Retention(completed="7d", failed="30d")
    assert parse_retention("") == Retention()
    for text, problem in [
        ("completed=7", "a duration"),
        ("running=1d", "state one of"),
        ("7d", "expected <state>=<duration>"),
        ("failed=1d,failed=2d", "twice"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_retention(text)
    with pytest.raises(ValidationError, match="retention"):
        Settings(retention="completed=soon")


def finished_record(retention: Retention, state: str = "cancel") -> RunRecord:
    record = sm.start_record(RunRecord.model_validate(_record_fields(retention)), NOW)
    return sm.cancel(record, NOW) if state == "cancel" else record


def _record_fields(retention: Retention) -> dict[str, object]:
    return {
        "id": "r1", "inputs": {}, "created_at": NOW, "updated_at": NOW, "attempts": [], "image": "busybox",
        "constraints": {"cpu": 1, "ram_mb": 64}, "retention": retention.model_dump(),
    }  # fmt: skip


def test_a_run_expires_by_its_own_retention_else_the_default_counted_from_when_it_finished() -> None:
    default = Retention(cancelled="1h")
    own = stamp_expiry(finished_record(Retention(cancelled="2d")), default, NOW + timedelta(minutes=5))
    assert own.expires_at == NOW + timedelta(days=2)  # from the finish, not from this later write
    assert ttl_seconds(own, NOW + timedelta(days=1)) == 86400
    assert ttl_seconds(own, NOW + timedelta(days=3)) == 1  # overdue: JetStream's smallest TTL, never none
    by_default = stamp_expiry(finished_record(Retention()), default, NOW)
    assert by_default.expires_at == NOW + timedelta(hours=1)
    kept = stamp_expiry(finished_record(Retention(cancelled="forever")), default, NOW)
    assert (kept.expires_at, ttl_seconds(kept, NOW)) == (None, None)
    unfinished = stamp_expiry(finished_record(Retention(cancelled="1s"), state="pending"), default, NOW)
    assert (unfinished.expires_at, ttl_seconds(unfinished, NOW)) == (None, None)
    ten_years = stamp_expiry(finished_record(Retention(cancelled="9999999d")), default, NOW)
    assert ten_years.expires_at is None  # beyond ten years is forever


async def open_index(bus: MemoryBus, directory: Path, expired: list[tuple[str, int]]) -> IndexedRuns:
    index = QueryIndex(IndexFile.claim(directory), BucketState(await bus.runs.origin(), 0))
    return IndexedRuns(index, bus.runs, on_expired=lambda run_id, attempts: expired.append((run_id, attempts)))


async def test_an_expired_run_leaves_the_index_and_is_handed_to_the_cleaner_once(tmp_path: Path) -> None:
    bus, expired = MemoryBus(), []
    listener = await open_index(bus, tmp_path, expired)
    runs = RunService(bus, DefinitionService(bus), observer=listener, retention=Retention(cancelled="1s"))
    feed = RunFeed(bus, TaskFailures(), runs.store, keeper=listener)
    feed.subscribe(listener)
    await feed.start()
    record, _ = await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None)
    deleted, _ = await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None)
    for run_id in (record.id, deleted.id):
        await runs.cancel(run_id)
    await bus.runs.delete(deleted.id)  # a client's delete: not an expiry, nothing to hand on
    await until(lambda: expired, timeout=5, what="the expiry reaches the index")
    assert expired == [(record.id, 1)]
    assert listener.index.list_runs(RunListQuery(limit=10))[0] == []
    with pytest.raises(RunNotFound):
        await runs.get(record.id)
    await feed.stop()
    listener.index.close()


async def test_the_sweep_drops_only_rows_past_their_expiry_and_its_grace(tmp_path: Path) -> None:
    bus, expired = MemoryBus(), []
    listener = await open_index(bus, tmp_path, expired)
    now = time.time()
    for run_id, ago in (("long-gone", SWEEP_GRACE_S + 5), ("just-due", SWEEP_GRACE_S - 5)):
        record = finished_record(Retention())
        record.id, record.expires_at = run_id, datetime.fromtimestamp(now - ago, UTC)
        listener.index.upsert_run(record, 1)
    listener.index.upsert_run(finished_record(Retention()), 2)  # kept forever
    assert listener.sweep_expired(now) == 1
    assert expired == [("long-gone", 1)]
    assert len(listener.index.list_runs(RunListQuery(limit=10))[0]) == 2
    listener.index.close()


async def test_only_the_leader_deletes_an_expired_runs_logs() -> None:
    bus, leading, asked = MemoryBus(), [False], []
    for run_id in ("follower-heard", "leader-heard"):
        for attempt in (1, 2):
            await bus.write_object(f"{run_id}/{attempt}", b"captured")
        await bus.publish_durable(names.log_subject(run_id, 2), b"a live line")
        await bus.publish_durable(log_subject(run_id), b"{}")
    cleaner = ExpiredRunCleaner(bus, TaskFailures(), leading=lambda: asked.append(1) or leading[0])
    cleaner.start()
    cleaner.expired("follower-heard", 2)
    await until(lambda: asked, timeout=5, what="the cleaner asks whether it leads")
    leading[0] = True
    cleaner.expired("leader-heard", 2)
    await until(lambda: cleaner.cleaned == 1, timeout=5, what="the leader cleans")
    await cleaner.stop()
    for run_id, left in (("follower-heard", b"captured"), ("leader-heard", None)):
        assert await bus.read_object(f"{run_id}/2") == left
        lines = await bus.read_subject(names.LOGS_STREAM, names.log_subject(run_id, 2), 0, 10)
        deliveries = await bus.read_subject(LOG_STREAM, log_subject(run_id), 0, 10)
        assert (len(lines), len(deliveries)) == ((1, 1) if left else (0, 0))
    assert await bus.read_object("leader-heard/1") is None
