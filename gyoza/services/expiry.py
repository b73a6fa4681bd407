"""What goes when JetStream expires a finished run at the end of its retention (issue 12.5).

The store removes the run record itself (its write carried the retention as TTL, ``gyoza.core.retention``); the
run's logs are in other streams and the object store, which know nothing of it. Every server process hears of the
expiry (the run feed delivers the store's marker, and a kept index finds the expiries it missed while stopped:
``IndexedRuns.sweep_expired``); the one leading the scheduler deletes the logs, the others drop the news. Best
effort by design: what a leader change loses here is a run's captured logs left in the object store (the live log
lines expire within a day anyway), never anything a request can still reach.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gyoza.bus.port import Bus
from gyoza.errors import Unavailable
from gyoza.services.removal import delete_logs
from gyoza.supervision import TaskFailures, stop_task, supervised

log = logging.getLogger(__name__)

# Expired runs waiting for their logs to go; past it, more are dropped (and said so): a burst of expiries must not
# grow without bound while NATS is away.
MAX_PENDING = 100_000
# After NATS failed a deletion, wait this long before the next one.
RETRY_PAUSE_S = 1.0
CLEANER_TASK = "expired-run-cleaner"


class ExpiredRunCleaner:
    def __init__(self, bus: Bus, failures: TaskFailures, leading: Callable[[], bool]) -> None:
        """``leading``: whether this process leads the scheduler right now (only the leader deletes)."""
        self.bus = bus
        self.failures = failures
        self.leading = leading
        self.cleaned = 0  # runs whose logs this process deleted
        self._pending: asyncio.Queue[tuple[str, int]] = asyncio.Queue(MAX_PENDING)
        self._task: asyncio.Task[None] | None = None

    def expired(self, run_id: str, attempts: int) -> None:
        """``IndexedRuns``' hook: the store removed ``run_id``, which had ``attempts`` attempts."""
        try:
            self._pending.put_nowait((run_id, attempts))
        except asyncio.QueueFull:
            log.warning("expired run %s: its logs are left (%d expired runs already wait)", run_id, MAX_PENDING)

    def start(self) -> None:
        self._task = asyncio.create_task(supervised(CLEANER_TASK, self._clean, self.failures), name=CLEANER_TASK)

    async def stop(self) -> None:
        await stop_task(self._task)

    async def _clean(self) -> None:
        while True:
            run_id, attempts = await self._pending.get()
            if not self.leading():
                continue  # the leader heard of it too
            while True:
                try:
                    await delete_logs(self.bus, run_id, attempts)
                    break
                except Unavailable as exc:
                    log.warning("deleting the logs of expired run %s: %s; retrying", run_id, exc.message)
                    await asyncio.sleep(RETRY_PAUSE_S)
            self.cleaned += 1
