"""Time, passed in: ``utcnow`` for the pure core, and a ``Clock`` for the scheduler (wall and monotonic time).

``ManualClock`` is the twin for tests: it stands still until ``advance`` moves both of its times together.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


def utcnow() -> datetime:
    return datetime.now(UTC)


class Clock(Protocol):
    def utcnow(self) -> datetime:
        """Timezone-aware UTC now (records, leases)."""
        ...

    def time(self) -> float:
        """Epoch seconds (retry back-off due times)."""
        ...

    def monotonic(self) -> float:
        """Seconds that only go forward (liveness, the lease's acting time)."""
        ...


class SystemClock:
    def utcnow(self) -> datetime:
        return utcnow()

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._wall = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._monotonic = 1000.0

    def utcnow(self) -> datetime:
        return self._wall

    def time(self) -> float:
        return self._wall.timestamp()

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._wall += timedelta(seconds=seconds)
        self._monotonic += seconds
