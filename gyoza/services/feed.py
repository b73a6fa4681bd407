"""Follow the runs bucket: every run record version, in order, handed to the listeners of this process.

At start the KV watch replays the latest version of every run, then ``ready`` is set and live changes follow. The
query index, the topic feed and the scheduler's model are all listeners, so each process derives them from KV
alone (SPEC §3, invariant 5). A listener that fails on one version is logged and the feed goes on.
"""

from __future__ import annotations

import asyncio
import logging
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


class RunFeed:
    def __init__(self, bus: Bus, failures: TaskFailures, decoder: RunDecoder) -> None:
        """``decoder``: the run store of this process, which hands back the records it wrote without a parse."""
        self.bus = bus
        self.decoder = decoder
        self.failures = failures
        self.listeners: list[RunListener] = []
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, listener: RunListener) -> None:
        self.listeners.append(listener)

    async def start(self) -> None:
        """Follow the bucket until the replay is in. A watch that fails later is restarted (supervised): it replays
        the latest version of every run again, which every listener skips or applies idempotently."""
        self._task = await start_supervised("run-feed", self._follow, self.failures, self.ready)

    async def stop(self) -> None:
        await stop_task(self._task)

    async def _follow(self) -> None:
        async for change in self.bus.runs.watch():
            if change is INITIAL_VALUES_DONE:
                self.ready.set()
                continue
            if change.value is None:
                continue
            try:
                record = self.decoder.decode(change.key, change.value)
            except RecordTooNew as exc:  # a newer server's record: left alone, and the feed goes on with the rest
                log.error("run feed skips %s: %s", change.key, exc.message)
                continue
            for listener in self.listeners:
                try:
                    await listener.on_run(record, change.revision)
                except Exception:
                    log.exception("%s failed on run %s", type(listener).__name__, record.id)
