"""Read-your-writes across server processes: a GET /runs waits until this process's run feed has delivered every
run version acknowledged before the request (``IndexedRuns.catch_up``), whichever process wrote it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gyoza.bus.memory import MemoryBus
from gyoza.schema import AdHocRunIn, RunListQuery
from gyoza.server.index import QueryIndex
from gyoza.server.indexfile import BucketState, IndexFile
from gyoza.server.watch import IndexedRuns
from gyoza.services.definitions import DefinitionService
from gyoza.services.runs import RunService

RUN = {"image": "busybox", "constraints": {"cpu": 1, "ram_mb": 64}}


def listed(index: QueryIndex) -> list[str]:
    return index.list_runs(RunListQuery())[0]


async def test_a_list_waits_for_the_feed_to_deliver_a_run_another_process_created(tmp_path: Path) -> None:
    bus = MemoryBus()
    other_process = RunService(bus, DefinitionService(bus))
    index = QueryIndex(IndexFile.claim(tmp_path), BucketState("memory", 0))
    this_process = IndexedRuns(index, bus.runs)
    record, _ = await other_process.create_adhoc(AdHocRunIn.model_validate(RUN), None)

    caught_up = asyncio.create_task(this_process.catch_up(timeout_s=10))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not caught_up.done(), "the feed has not delivered the run yet: the list must wait"
    _, revision = await bus.runs.get(record.id)
    await this_process.on_run(record, revision)  # the run feed delivers it
    await asyncio.wait_for(caught_up, 1)
    assert [record.id in body for body in listed(index)] == [True]
    index.close()


async def test_a_caught_up_index_answers_at_once_and_a_stuck_feed_only_delays(tmp_path: Path) -> None:
    bus = MemoryBus()
    runs = RunService(bus, DefinitionService(bus))
    index = QueryIndex(IndexFile.claim(tmp_path), BucketState("memory", 0))
    listener = IndexedRuns(index, bus.runs)
    await asyncio.wait_for(listener.catch_up(), 1)  # an empty bucket: nothing to wait for
    record, _ = await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None)
    _, revision = await bus.runs.get(record.id)
    await listener.on_run(record, revision)
    await asyncio.wait_for(listener.catch_up(), 1)
    await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None)  # never delivered: a feed that is restarting
    await asyncio.wait_for(listener.catch_up(timeout_s=0.05), 1)
    assert len(listed(index)) == 1
    index.close()
