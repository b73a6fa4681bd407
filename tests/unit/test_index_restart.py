"""A kept query index: a restart seeds from it and replays only what changed since, and it is rebuilt whenever it
cannot describe the runs bucket as it is now (another bucket, an emptied one, another format, a damaged file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gyoza.bus.memory import MemoryBus
from gyoza.schema import AdHocRunIn, RunListQuery, RunRecord, RunState
from gyoza.server import indexfile
from gyoza.server.index import QueryIndex
from gyoza.server.indexfile import BucketState, IndexFile
from gyoza.server.watch import IndexedRuns
from gyoza.services.definitions import DefinitionService
from gyoza.services.feed import RunFeed
from gyoza.services.removal import RunRemoval
from gyoza.services.runs import RunService
from gyoza.supervision import TaskFailures
from tests.waiting import until

RUN = {"image": "busybox", "constraints": {"cpu": 1, "ram_mb": 64}}


class Seen:
    """A run feed listener that records what it was handed (as the scheduler's model would be)."""

    def __init__(self) -> None:
        self.states: dict[str, RunState] = {}

    async def on_run(self, record: RunRecord, revision: int) -> None:
        self.states[record.id] = record.current.state


async def bucket_state(bus: MemoryBus) -> BucketState:
    return BucketState(await bus.runs.origin(), await bus.runs.last_revision())


async def serve(bus: MemoryBus, directory: Path) -> tuple[QueryIndex, RunFeed, Seen]:
    """What a server process does at start: open its index, then follow the runs bucket from where it got to."""
    index = QueryIndex(IndexFile.claim(directory), await bucket_state(bus))
    listener, seen = IndexedRuns(index, bus.runs), Seen()
    feed = RunFeed(bus, TaskFailures(), RunService(bus, DefinitionService(bus)).store, keeper=listener)
    feed.subscribe(listener)
    feed.subscribe(seen)
    await feed.start(after=index.applied, seed=index.live_records())
    return index, feed, seen


async def stop(index: QueryIndex, feed: RunFeed) -> None:
    await feed.stop()
    index.close()


async def settle(feed: RunFeed, bus: MemoryBus) -> None:
    target = await bus.runs.last_revision()
    await until(lambda: feed.delivered >= target, timeout=5, what="the feed delivers every write")


def listed(index: QueryIndex) -> int:
    return len(index.list_runs(RunListQuery(limit=100))[0])


async def test_a_restart_seeds_unfinished_runs_and_replays_only_the_changes(tmp_path: Path) -> None:
    bus = MemoryBus()
    runs = RunService(bus, DefinitionService(bus))
    created = [(await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None))[0] for _ in range(10)]
    index, feed, _ = await serve(bus, tmp_path)
    for record in created[:6]:
        await runs.cancel(record.id)
    await settle(feed, bus)
    await stop(index, feed)

    # While this process is down: one more cancel and one new run.
    await runs.cancel(created[6].id)
    newcomer, _ = await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None)

    index, feed, seen = await serve(bus, tmp_path)
    assert feed.replayed == 4 + 2  # the four unfinished runs the index kept, then the two changes
    assert listed(index) == 11
    pending = {run_id for run_id, state in seen.states.items() if state == RunState.PENDING}
    assert pending == {r.id for r in created[7:]} | {newcomer.id}
    assert seen.states[created[6].id] == RunState.CANCELLED
    await stop(index, feed)


async def served_once(tmp_path: Path) -> MemoryBus:
    """A bus with one run, which a server process indexed and stopped: its index file is kept in ``tmp_path``."""
    bus = MemoryBus()
    await RunService(bus, DefinitionService(bus)).create_adhoc(AdHocRunIn.model_validate(RUN), None)
    index, feed, _ = await serve(bus, tmp_path)
    await stop(index, feed)
    return bus


async def test_an_index_of_another_bucket_is_rebuilt(tmp_path: Path) -> None:
    await served_once(tmp_path)
    index, feed, _ = await serve(MemoryBus(), tmp_path)  # same revisions, another bucket
    assert (index.applied, listed(index), feed.replayed) == (0, 0, 0)
    await stop(index, feed)


async def test_an_index_ahead_of_the_bucket_is_rebuilt(tmp_path: Path) -> None:
    bus = await served_once(tmp_path)
    emptied = BucketState(await bus.runs.origin(), 0)
    rebuilt = QueryIndex(IndexFile.claim(tmp_path), emptied)
    assert (rebuilt.applied, listed(rebuilt)) == (0, 0)
    rebuilt.close()


async def test_an_index_of_another_format_or_damaged_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = await served_once(tmp_path)
    kept = QueryIndex(IndexFile.claim(tmp_path), await bucket_state(bus))
    assert (kept.applied, listed(kept)) == (await bus.runs.last_revision(), 1)
    kept.close()

    monkeypatch.setattr(indexfile, "LAYOUT", indexfile.LAYOUT + 1)
    rebuilt = QueryIndex(IndexFile.claim(tmp_path), await bucket_state(bus))
    assert (rebuilt.applied, listed(rebuilt)) == (0, 0)
    rebuilt.close()

    (tmp_path / "runs-0.sqlite").write_bytes(b"not a database" * 100)
    damaged = QueryIndex(IndexFile.claim(tmp_path), await bucket_state(bus))
    assert (damaged.applied, listed(damaged)) == (0, 0)
    damaged.close()


def test_each_process_claims_a_file_of_its_own_and_a_released_one_is_taken_again(tmp_path: Path) -> None:
    first, second = IndexFile.claim(tmp_path), IndexFile.claim(tmp_path)
    assert (first.path.name, second.path.name) == ("runs-0.sqlite", "runs-1.sqlite")
    first.release()
    third = IndexFile.claim(tmp_path)
    assert third.path.name == "runs-0.sqlite"
    second.release()
    third.release()


async def test_a_run_deleted_while_the_process_was_down_leaves_the_kept_index(tmp_path: Path) -> None:
    bus = MemoryBus()
    runs = RunService(bus, DefinitionService(bus))
    created = [(await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None))[0] for _ in range(3)]
    for record in created:
        await runs.cancel(record.id)
    index, feed, _ = await serve(bus, tmp_path)
    await settle(feed, bus)
    await stop(index, feed)

    await RunRemoval(runs).delete(created[0].id)

    index, feed, _ = await serve(bus, tmp_path)
    assert feed.replayed == 1  # the deletion alone
    assert listed(index) == 2
    await stop(index, feed)


async def test_a_version_older_than_a_deletion_does_not_bring_the_run_back(tmp_path: Path) -> None:
    """This server's own delete can overtake the feed's delivery of the run's last versions."""
    bus = MemoryBus()
    index = QueryIndex(IndexFile.claim(tmp_path), await bucket_state(bus))
    runs = RunService(bus, DefinitionService(bus))
    record, _ = await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None)
    cancelled, revision = await runs.store.get((await runs.cancel(record.id)).id)
    index.upsert_run(cancelled, revision)
    index.remove_run(record.id, revision)
    index.upsert_run(record, revision - 1)  # the feed, late
    index.upsert_run(cancelled, revision)
    assert listed(index) == 0
    index.note_applied(revision + 1)  # the feed has delivered the deletion: the tombstone may go
    index.close()
    assert indexfile.connect(index.path).execute("SELECT count(*) FROM removed").fetchone()[0] == 0
