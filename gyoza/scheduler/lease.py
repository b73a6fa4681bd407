"""The leader lease (KV ``gyoza_leases/scheduler``): one server replica schedules at a time.

The holder renews it well before it expires; a standby takes it once it has expired. Every change is a
compare-and-set, so two replicas can never both believe they won the same revision. Expiry in KV uses wall-clock
time, so replicas need roughly synchronised clocks (NTP), as with any lease.

The holder itself judges by its monotonic clock: it counts its lease from just before the write that last renewed
it, and acts as leader only for ``ACTING_SHARE`` of the TTL from then. So a holder that cannot renew (NATS away, a
stalled process) stops acting before the lease it wrote can expire and a standby can take it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from gyoza.bus.connection import Bus
from gyoza.bus.records import RecordExists, RecordMissing, RecordStore
from gyoza.errors import Conflict, Unavailable
from gyoza.schema import LeaderLease
from gyoza.services.clock import utcnow

LEASE_KEY = "scheduler"
# Stop acting this long before the written expiry: room for a write checked just in time to land, and for skew.
ACTING_SHARE = 0.8


class Lease:
    def __init__(self, bus: Bus, holder: str, ttl: float, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = RecordStore(bus.leases, LeaderLease)
        self.holder = holder
        self.ttl = timedelta(seconds=ttl)
        self.acting_s = ttl * ACTING_SHARE
        self.clock = clock
        self.revision = 0
        self.renewed_at: float | None = None  # monotonic time just before the write that last took or renewed it

    def fresh(self) -> bool:
        """Held and renewed recently enough to act on (a cheap check: no NATS round trip)."""
        return self.renewed_at is not None and time.monotonic() - self.renewed_at < self.acting_s

    def remaining(self) -> float:
        """Seconds left to act on the lease as last renewed (0 when not held)."""
        if self.renewed_at is None:
            return 0.0
        return max(self.renewed_at + self.acting_s - time.monotonic(), 0.0)

    def _fresh_record(self) -> LeaderLease:
        return LeaderLease(holder=self.holder, expires_at=self.clock() + self.ttl)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it, it expired, or it is still ours (a restart of our own renewals)."""
        started = time.monotonic()
        lease = self._fresh_record()
        try:
            current, revision = await self.store.get(LEASE_KEY)
        except RecordMissing:
            try:
                self.revision = await self.store.create(LEASE_KEY, lease)
            except RecordExists:
                return False
        else:
            if current.holder != self.holder and current.expires_at > self.clock():
                return False
            try:
                self.revision = await self.store.write(LEASE_KEY, lease, revision)
            except Conflict:
                return False
        self.renewed_at = started
        return True

    async def renew(self) -> bool:
        """Extend the lease. False once another replica took it; ``Unavailable`` when NATS did not answer (the
        caller keeps acting only while the lease is still ``fresh``)."""
        started = time.monotonic()
        try:
            self.revision = await self.store.write(LEASE_KEY, self._fresh_record(), self.revision)
        except Conflict:
            self.renewed_at = None
            return False
        self.renewed_at = started
        return True

    def forget(self) -> None:
        """Stop counting on the lease (on stepping down): nothing is acted on until it is taken again."""
        self.renewed_at = None

    async def release(self) -> None:
        """Let a standby take over at once (clean shutdown): mark our lease expired, if it is still ours."""
        self.renewed_at = None
        expired = LeaderLease(holder=self.holder, expires_at=self.clock())
        with contextlib.suppress(Conflict, Unavailable):
            await self.store.write(LEASE_KEY, expired, self.revision)
