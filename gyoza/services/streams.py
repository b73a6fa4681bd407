"""The fan-out hub behind the live streams: one per server process, fed by the run feed and by NATS doorbells.

A ``RunWatch`` is one open stream's (or one ``?wait=``'s) view of a run. The hub, a ``RunFeed`` listener, hands it
each version of its run; no stream opens a KV watch or scans anything. A watch keeps only the **latest** version
(a version holds every event of the ones before it), so however slowly its reader reads, it holds one record
reference and a few flags: a slow reader costs no memory beyond that, and misses nothing it could resume later.

Log lines and topic events live in JetStream streams. A ``Doorbell`` is one core NATS subscription per subject
with watchers on it (shared by every stream of that subject in this process, dropped with the last): a message
only wakes the watchers, which then read the stream from their own cursor. Subscribing comes before any read, so
nothing published meanwhile is missed, and reads by cursor neither skip nor repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from gyoza.bus.port import Bus, MessageHandler, Stoppable
from gyoza.schema import RunRecord

log = logging.getLogger(__name__)

Ring = Callable[[bytes], None]


class RunWatch:
    """The latest version of a run this process saw since the last ``take``, and whether anything rang."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._latest: tuple[RunRecord, int] | None = None
        self._rang: set[int] = set()
        self._wake = asyncio.Event()

    def offer(self, record: RunRecord, revision: int) -> None:
        """A newer version replaces the one not taken yet: memory stays one record, whatever the reader's pace."""
        if self._latest is None or revision >= self._latest[1]:
            self._latest = (record, revision)
            self._wake.set()

    def ring(self, attempt: int = 0) -> None:
        """New messages of a subject this watch follows (log lines of ``attempt``, or a topic's events)."""
        self._rang.add(attempt)
        self._wake.set()

    async def wait(self, seconds: float) -> bool:
        """Until something is there to take (True) or ``seconds`` pass quietly (False)."""
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):  # no task per wait, unlike wait_for: 500 streams wake often
                    await self._wake.wait()
        return self._wake.is_set()

    def take(self) -> tuple[RunRecord | None, set[int]]:
        """The latest version not taken yet (or None) and the attempts that rang since the last take."""
        latest, rang = self._latest, self._rang
        self._latest, self._rang = None, set()
        self._wake.clear()
        return (latest[0] if latest else None), rang


@dataclass
class _Bell:
    subscription: Stoppable | None = None
    rings: list[Ring] = field(default_factory=list)


class Doorbells:
    """One core subscription per subject that some watch follows, shared, dropped when the last watch leaves."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._bells: dict[str, _Bell] = {}
        self._lock = asyncio.Lock()  # subscribing and unsubscribing one subject never interleave

    @contextlib.asynccontextmanager
    async def follow(self, subject: str, ring: Ring) -> AsyncIterator[None]:
        """``ring(payload)`` for each message on ``subject`` while inside; subscribed before it returns."""
        async with self._lock:
            bell = self._bells.setdefault(subject, _Bell())
            bell.rings.append(ring)
            if bell.subscription is None:
                try:
                    bell.subscription = await self.bus.subscribe(subject, self._handler(bell))
                except BaseException:
                    self._leave(subject, bell, ring)
                    raise
        try:
            yield
        finally:
            async with self._lock:
                stop = self._leave(subject, bell, ring)
            if stop is not None:
                await stop.stop()

    def _leave(self, subject: str, bell: _Bell, ring: Ring) -> Stoppable | None:
        bell.rings.remove(ring)
        if bell.rings:
            return None
        del self._bells[subject]
        return bell.subscription

    @staticmethod
    def _handler(bell: _Bell) -> MessageHandler:
        async def handle(payload: bytes) -> None:
            for ring in list(bell.rings):
                ring(payload)

        return handle

    def subjects(self) -> int:
        return len(self._bells)


class StreamHub:
    """Run feed listener: each version of a run goes to the watches open on it in this process."""

    def __init__(self, bus: Bus) -> None:
        self.doorbells = Doorbells(bus)
        self._watches: dict[str, set[RunWatch]] = {}

    async def on_run(self, record: RunRecord, revision: int) -> None:
        for watch in self._watches.get(record.id, ()):
            watch.offer(record, revision)

    @contextlib.contextmanager
    def watch(self, run_id: str) -> Iterator[RunWatch]:
        """A watch on ``run_id`` while inside: every version the feed delivers from now on is offered to it."""
        watch = RunWatch(run_id)
        self._watches.setdefault(run_id, set()).add(watch)
        try:
            yield watch
        finally:
            watches = self._watches.get(run_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[run_id]

    def open_watches(self) -> int:
        return sum(len(watches) for watches in self._watches.values())
