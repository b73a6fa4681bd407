"""The moments the scheduler's own event loop was behind, so that eviction does not blame workers for them.

A leader that is late (CPU starved, paused, a backlog of messages) has heartbeats waiting unprocessed in its sockets
and queues: measured by its own clock, every worker would look silent. The liveness loop records each time it woke
later than asked as a stall; a worker's silence is the time since its last heartbeat arrived minus the stalls in
between, i.e. only the time the leader could have heard it.
"""

from __future__ import annotations

import bisect


class Stalls:
    """Stall periods, oldest first, with cumulative totals for O(log n) look-ups; periods older than ``keep_s``
    are forgotten (a worker silent for that long is then judged on the stalls that remain)."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._totals: list[float] = []  # stalled seconds up to the end of each period
        self._base = 0.0  # stalled seconds of the periods forgotten

    def add(self, start: float, end: float) -> None:
        """Record that the loop could not run from ``start`` to ``end`` (monotonic seconds, in time order)."""
        if end <= start:
            return
        if self._ends and start < self._ends[-1]:
            start = self._ends[-1]
            if end <= start:
                return
        total = (self._totals[-1] if self._totals else self._base) + end - start
        self._starts.append(start)
        self._ends.append(end)
        self._totals.append(total)
        self._forget_before(end - self.keep_s)

    def _forget_before(self, horizon: float) -> None:
        drop = bisect.bisect_left(self._ends, horizon)
        if drop:
            self._base = self._totals[drop - 1]
            del self._starts[:drop], self._ends[:drop], self._totals[:drop]

    def _until(self, moment: float) -> float:
        """Stalled seconds (of the kept periods) before ``moment``."""
        i = bisect.bisect_right(self._ends, moment)
        before = self._totals[i - 1] if i else self._base
        if i < len(self._starts) and self._starts[i] < moment:
            before += moment - self._starts[i]
        return before

    def between(self, since: float, now: float) -> float:
        """Stalled seconds between ``since`` and ``now``."""
        if not self._ends or self._ends[-1] <= since:
            return 0.0
        return max(self._until(now) - self._until(since), 0.0)

    def clear(self) -> None:
        self._starts, self._ends, self._totals, self._base = [], [], [], 0.0
