"""Keep the local query index in step with KV: runs (through the run feed) and definitions (own watch).

The server only starts answering once both replays are in, so GET /runs and GET /definitions are complete from the
first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable

from gyoza.bus.port import INITIAL_VALUES_DONE, Bucket, Bus, KeyChange
from gyoza.errors import RecordTooNew
from gyoza.schema import DefinitionPointer, OpDefinition, RunRecord, WorkerRecord
from gyoza.server.index import QueryIndex
from gyoza.supervision import TaskFailures, supervised

log = logging.getLogger(__name__)


class IndexedRuns:
    """Keeps the index current from the run feed and from this server's own writes (read-your-writes), and wakes
    workers long-polling for their assignments."""

    def __init__(self, index: QueryIndex) -> None:
        self.index = index
        self.assignment_waiters: dict[str, asyncio.Event] = {}

    async def on_run(self, record: RunRecord, revision: int) -> None:
        self.run_written(record, revision)

    def run_written(self, record: RunRecord, revision: int) -> None:
        # Both this server's own writes and the feed's deliveries of them arrive here (in either order); the index
        # skips a version it already holds before building its row.
        self.index.upsert_run(record, revision)
        worker_id = record.current.worker_id
        if worker_id is not None and worker_id in self.assignment_waiters:
            self.assignment_waiters[worker_id].set()

    def definition_written(self, definition: OpDefinition, pointer: DefinitionPointer) -> None:
        self.index.definition_written(definition, pointer)

    def definition_deleted(self, name: str) -> None:
        self.index.definition_deleted(name)


class BucketFollower:
    """Follow the definitions and workers buckets into the index. A watch that fails after its first replay is
    restarted (supervised): it replays every key again, which the index applies idempotently."""

    def __init__(self, bus: Bus, index: QueryIndex, failures: TaskFailures) -> None:
        self.bus = bus
        self.index = index
        self.failures = failures
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        follows = (
            ("definitions-watch", self.bus.definitions, self._apply_definition),
            ("workers-watch", self.bus.workers, self._apply_worker),
        )
        ready = [asyncio.Event() for _ in follows]
        self.tasks = [
            asyncio.create_task(
                supervised(name, functools.partial(self._follow, bucket, apply, done), self.failures, started=done),
                name=name,
            )
            for (name, bucket, apply), done in zip(follows, ready, strict=True)
        ]
        waits = [asyncio.create_task(event.wait()) for event in ready]
        try:
            while not all(event.is_set() for event in ready):
                pending = {w for w in waits if not w.done()} | set(self.tasks)
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done & set(self.tasks):
                    task.result()  # a watch failed before its replay finished: raise its error
        except BaseException:
            await self.stop()
            raise
        finally:
            for wait in waits:
                wait.cancel()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @staticmethod
    async def _follow(bucket: Bucket, apply: Callable[[KeyChange], None], ready: asyncio.Event) -> None:
        async for change in bucket.watch():
            if change is INITIAL_VALUES_DONE:
                ready.set()
                continue
            try:
                apply(change)
            except RecordTooNew as exc:  # a newer server's record: left alone, and the watch goes on with the rest
                log.error("index skips %s: %s", change.key, exc.message)

    def _apply_definition(self, change: KeyChange) -> None:
        name, _, escaped_version = change.key.partition(".")
        if not escaped_version:
            if change.value is None:
                self.index.definition_deleted(name)
            else:
                self.index.set_pointer(DefinitionPointer.model_validate_json(change.value))
            return
        if change.value is not None:
            self.index.upsert_definition(OpDefinition.model_validate_json(change.value))

    def _apply_worker(self, change: KeyChange) -> None:
        if change.value is not None:
            self.index.upsert_worker(WorkerRecord.model_validate_json(change.value))
