"""Feed the local query index and the topic feed from KV watches of the runs and definitions buckets.

At start each watch replays every key's latest value; ``ready`` is set once both replays are in, and the server
only starts answering after that, so GET /runs is complete from the first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gyoza.bus.connection import Bus
from gyoza.bus.records import KeyChange, watch_bucket
from gyoza.schema import DefinitionPointer, OpDefinition, RunRecord
from gyoza.server.index import QueryIndex
from gyoza.services.topics import TopicFeed

log = logging.getLogger(__name__)

_REPLAY_BATCH = 500


class IndexFeeder:
    def __init__(self, bus: Bus, index: QueryIndex, topics: TopicFeed) -> None:
        self.bus = bus
        self.index = index
        self.topics = topics
        self.tasks: list[asyncio.Task[None]] = []
        self._runs_ready = asyncio.Event()
        self._definitions_ready = asyncio.Event()

    async def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self._follow_runs(), name="index-runs"),
            asyncio.create_task(self._follow_definitions(), name="index-definitions"),
        ]
        await asyncio.gather(self._runs_ready.wait(), self._definitions_ready.wait())

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow_runs(self) -> None:
        batch: list[tuple[RunRecord, int]] = []
        async for change in watch_bucket(self.bus.runs):
            if change is None:
                self.index.upsert_runs(batch)
                batch.clear()
                self._runs_ready.set()
                continue
            if change.value is None:
                continue
            record = RunRecord.model_validate_json(change.value)
            if self._runs_ready.is_set():
                self.index.upsert_run(record, change.revision)
            else:
                batch.append((record, change.revision))
                if len(batch) >= _REPLAY_BATCH:
                    self.index.upsert_runs(batch)
                    batch.clear()
            await self._publish_topic_events(record)

    async def _publish_topic_events(self, record: RunRecord) -> None:
        try:
            await self.topics.publish_new_events(record)
        except Exception:
            # The mark was not raised, so the next version of this record (or the next start) publishes again.
            log.exception("publishing topic events of run %s failed", record.id)

    async def _follow_definitions(self) -> None:
        async for change in watch_bucket(self.bus.definitions):
            if change is None:
                self._definitions_ready.set()
                continue
            self._apply_definition_change(change)

    def _apply_definition_change(self, change: KeyChange) -> None:
        name, _, escaped_version = change.key.partition(".")
        if not escaped_version:
            if change.value is None:
                self.index.definition_deleted(name)
            else:
                self.index.set_pointer(DefinitionPointer.model_validate_json(change.value))
            return
        if change.value is not None:
            self.index.upsert_definition(OpDefinition.model_validate_json(change.value))
