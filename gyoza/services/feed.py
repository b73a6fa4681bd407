"""Follow the runs bucket: every run record version, in order, handed to the listeners of this process.

At start the KV watch replays the latest version of every run, then ``ready`` is set and live changes follow. The
query index, the topic feed and the scheduler's model are all listeners, so each process derives them from KV
alone (SPEC §3, invariant 5). A listener that fails on one version is logged and the feed goes on.

A process that kept its query index starts from a revision instead (``start(after=...)``): first the unfinished runs
the index kept (``seed``, as of some revision at or past ``after``), then every run changed since ``after``. Every
listener gets each run's latest version either way: a version seen twice is skipped by its revision, and a finished
run missing from the seed is what no listener needs (the scheduler's model and the open streams hold only unfinished
runs; the index has it; the topic outbox treats a run it has not seen as out up to its cursor). A watch that fails
later resumes from the last revision delivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from gyoza.bus.port import INITIAL_VALUES_DONE, Bus
from gyoza.errors import RecordTooNew
from gyoza.schema import RunRecord
from gyoza.supervision import TaskFailures, start_supervised, stop_task

log = logging.getLogger(__name__)


class RunListener(Protocol):
    async def on_run(self, record: RunRecord, revision: int) -> None: ...


class RunDecoder(Protocol):
    def decode(self, key: str, raw: bytes) -> RunRecord: ...


class RecordKeeper(Protocol):
    """Keeps the bytes of each version delivered (after the listeners had it)."""

    def keep(self, record: RunRecord, raw: bytes, revision: int) -> None: ...

    def forget(self, run_id: str, revision: int, expired: bool = False) -> None:
        """The run was deleted at ``revision`` (``expired``: by the store, at the end of its retention)."""
        ...


class RunFeed:
    def __init__(
        self, bus: Bus, failures: TaskFailures, decoder: RunDecoder, keeper: RecordKeeper | None = None
    ) -> None:
        """``decoder``: the run store of this process, which hands back the records it wrote without a parse."""
        self.bus = bus
        self.decoder = decoder
        self.keeper = keeper
        self.failures = failures
        self.listeners: list[RunListener] = []
        self.ready = asyncio.Event()
        self.delivered = 0  # every revision up to here was handed to the listeners
        self.replayed = 0  # versions the start-up replay delivered (the seed included)
        self._seed: list[tuple[str, bytes, int]] = []
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, listener: RunListener) -> None:
        self.listeners.append(listener)

    async def start(self, after: int = 0, seed: Sequence[tuple[str, bytes, int]] = ()) -> None:
        """Follow the bucket from revision ``after`` (after delivering ``seed``: (key, record, revision) of the
        unfinished runs as of ``after`` or later) until the replay is in."""
        self.delivered, self._seed = after, list(seed)
        self._task = await start_supervised("run-feed", self._follow, self.failures, self.ready)

    async def stop(self) -> None:
        await stop_task(self._task)

    async def _follow(self) -> None:
        seed, self._seed = self._seed, []
        for key, raw, revision in seed:
            await self._deliver(key, raw, revision)
        after = self.delivered
        if after and await self.bus.runs.last_revision() < after:  # the bucket was emptied or made anew
            after = 0
        async for change in self.bus.runs.watch(after=after):
            if change is INITIAL_VALUES_DONE:
                if not self.ready.is_set():
                    self.replayed += len(seed)
                    log.info("run feed replayed %d run versions from revision %d", self.replayed, after)
                self.ready.set()
                continue
            self.delivered = max(self.delivered, change.revision)
            if not self.ready.is_set():
                self.replayed += 1
            if change.value is not None:
                await self._deliver(change.key, change.value, change.revision)
            elif self.keeper is not None:
                self.keeper.forget(change.key, change.revision, change.expired)

    async def _deliver(self, key: str, raw: bytes, revision: int) -> None:
        try:
            record = self.decoder.decode(key, raw)
        except RecordTooNew as exc:  # a newer server's record: left alone, and the feed goes on with the rest
            log.error("run feed skips %s: %s", key, exc.message)
            return
        for listener in self.listeners:
            try:
                await listener.on_run(record, revision)
            except Exception:
                log.exception("%s failed on run %s", type(listener).__name__, record.id)
        if self.keeper is not None:
            self.keeper.keep(record, raw, revision)
