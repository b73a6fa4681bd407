"""Keep the local query index in step with KV: runs (through the run feed) and definitions (own watch).

The server only starts answering once both replays are in, so GET /runs and GET /definitions are complete from the
first request.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from gyoza.bus.port import INITIAL_VALUES_DONE, Bucket, Bus, KeyChange
from gyoza.errors import RecordTooNew, Unavailable
from gyoza.schema import DefinitionPointer, OpDefinition, RunRecord, WorkerRecord
from gyoza.server.index import QueryIndex
from gyoza.supervision import TaskFailures, stop_tasks, supervised

log = logging.getLogger(__name__)

# How long a GET /runs waits for this process's run feed to reach the writes acknowledged before it.
CATCH_UP_TIMEOUT_S = 2.0
# JetStream expires a run by the NATS server's clock, the sweep at start goes by this one: it drops a row only this
# long after its expiry, so a clock running ahead does not hide a run that is still there (the marker of a recent
# expiry is still in the stream, and the feed delivers it).
SWEEP_GRACE_S = 60.0


class IndexedRuns:
    """Keeps the index current from the run feed and from this server's own writes (read-your-writes), and wakes
    workers long-polling for their assignments.

    ``catch_up`` gives read-your-writes across processes: a run created through another server process (of the same
    ``--workers`` pool or another replica) is in this index once the feed has delivered the runs bucket's latest
    revision as of the request. Only the feed advances ``position``: this process's own writes can be newer than
    versions the feed has yet to deliver.
    """

    def __init__(self, index: QueryIndex, bucket: Bucket, on_expired: Callable[[str, int], None] | None = None) -> None:
        """``on_expired(run_id, attempts)``: a run the store removed at the end of its retention."""
        self.index = index
        self.bucket = bucket
        self.on_expired = on_expired
        self.assignment_waiters: dict[str, asyncio.Event] = {}
        self.position = index.applied  # a kept index holds every version up to there
        self._catching_up: list[tuple[int, asyncio.Future[None]]] = []

    async def on_run(self, record: RunRecord, revision: int) -> None:
        self.run_written(record, revision)
        self._advance(revision)

    def forget(self, run_id: str, revision: int, expired: bool = False) -> None:
        """The run feed's deletion of a run (at ``revision``); ``expired``: by the store, at the end of its
        retention."""
        attempts = self.index.remove_run(run_id, revision)
        if expired and attempts is not None and self.on_expired is not None:
            self.on_expired(run_id, attempts)
        self._advance(revision)

    def sweep_expired(self, now: float) -> int:
        """Drop the runs whose retention ended before ``now`` (Unix time) but whose expiry this index never heard
        of (``QueryIndex.drop_expired``); call once the run feed's replay is in. Returns how many."""
        expired = self.index.drop_expired(now - SWEEP_GRACE_S)
        if self.on_expired is not None:
            for run_id, attempts in expired:
                self.on_expired(run_id, attempts)
        return len(expired)

    def _advance(self, revision: int) -> None:
        self.position = max(self.position, revision)
        self.index.note_applied(self.position)
        if self._catching_up:
            self._release_caught_up()

    def run_deleted(self, run_id: str, revision: int) -> None:
        self.index.remove_run(run_id, revision)

    def keep(self, record: RunRecord, raw: bytes, revision: int) -> None:
        """The run feed's record bytes, kept for unfinished runs (a restart seeds from them)."""
        self.index.keep_record(record, raw, revision)

    async def catch_up(self, timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
        """Return once the index holds every run version written before this call (one NATS round trip). When NATS
        cannot say, or after ``timeout_s`` (a feed restarting, a version the feed skips), it returns anyway: the
        answer is then as fresh as this process's feed, as a list is during a NATS outage."""
        try:
            target = await asyncio.wait_for(self.bucket.last_revision(), timeout_s)
        except (Unavailable, TimeoutError):
            return
        if self.position >= target:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._catching_up.append((target, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            log.warning("run index at revision %d, not %d after %.1f s: answering from it", self.position, target,
                        timeout_s)  # fmt: skip
        finally:
            self._catching_up = [(t, w) for t, w in self._catching_up if w is not waiter]

    def _release_caught_up(self) -> None:
        for target, waiter in self._catching_up:
            if target <= self.position and not waiter.done():
                waiter.set_result(None)

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
        await stop_tasks(self.tasks)

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
