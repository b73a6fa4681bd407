"""Cheap heartbeats (issue 15 item 10): a heartbeat that changes nothing writes nothing to KV ``gyoza_workers``; one
that changes what the worker reports is written at once.

The worker timeout is long here (60 s), so the record's periodic refresh of ``last_heartbeat`` (at most once per
timeout) cannot fall inside a test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.kv import KeyValue

from tests.simworker import Cluster, Fleet
from tests.waiting import until

BEATS = 8


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    started = await Cluster(tmp_path_factory.mktemp("heartbeats"), GYOZA_WORKER_TIMEOUT="60").start()
    yield started
    started.stop()


@pytest.fixture
async def workers_kv(cluster: Cluster) -> AsyncIterator[KeyValue]:
    nc = await nats.connect(cluster.nats_url)
    yield await nc.jetstream().key_value("gyoza_workers")
    await nc.close()


async def last_sequence(kv: KeyValue) -> int:
    return int((await kv.status()).stream_info.state.last_seq)


async def test_an_unchanged_heartbeat_writes_nothing(fleet: Fleet, workers_kv: KeyValue, tag: str) -> None:
    worker = await fleet.add("quiet", tags=[tag])
    await worker.beats_after(1)  # registered, and the record written
    revision = (await workers_kv.get(worker.worker_id)).revision
    sequence = await last_sequence(workers_kv)

    await worker.beats_after(BEATS)

    assert (await workers_kv.get(worker.worker_id)).revision == revision
    assert await last_sequence(workers_kv) == sequence, "no heartbeat of an unchanged worker writes to gyoza_workers"
    assert (await worker.view())["status"] == "ONLINE"


async def test_a_heartbeat_that_changes_the_worker_is_written(fleet: Fleet, workers_kv: KeyValue, tag: str) -> None:
    worker = await fleet.add("grows", cpu=2, tags=[tag])
    await worker.beats_after(1)
    revision = (await workers_kv.get(worker.worker_id)).revision

    worker.resources["cpu"] = 6
    worker.tags = [tag, "more"]
    assert (await worker.heartbeat()).status_code == 200

    assert (await workers_kv.get(worker.worker_id)).revision > revision, "written before the reply"

    async def shown() -> bool:
        view = await worker.view()
        return bool(view["totals"]["cpu"] == 6 and sorted(view["tags"]) == sorted([tag, "more"]))

    await until(shown, what="GET /workers shows the new resources and tags")
