"""The leader lease (KV ``gyoza_leases/scheduler``): one server replica schedules at a time.

The holder renews it well before it expires; a standby takes it once it has expired. Every change is a
compare-and-set, so two replicas can never both believe they won the same revision. A leader that cannot renew
(NATS unreachable) keeps acting only until its own lease would have expired. Expiry uses wall-clock time, so replicas
need roughly synchronised clocks (NTP), as with any lease.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

from gyoza.bus.connection import Bus
from gyoza.bus.records import RecordExists, RecordMissing, RecordStore
from gyoza.errors import Conflict, Unavailable
from gyoza.schema import LeaderLease
from gyoza.services.clock import utcnow

LEASE_KEY = "scheduler"


class Lease:
    def __init__(self, bus: Bus, holder: str, ttl: float, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = RecordStore(bus.leases, LeaderLease)
        self.holder = holder
        self.ttl = timedelta(seconds=ttl)
        self.clock = clock
        self.revision = 0
        self.expires_at: datetime | None = None

    def _fresh(self) -> LeaderLease:
        return LeaderLease(holder=self.holder, expires_at=self.clock() + self.ttl)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it or it expired."""
        lease = self._fresh()
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
        self.expires_at = lease.expires_at
        return True

    async def renew(self) -> bool:
        """Extend the lease. False once another replica took it, or our own lease ran out while NATS was away."""
        lease = self._fresh()
        try:
            self.revision = await self.store.write(LEASE_KEY, lease, self.revision)
        except Conflict:
            return False
        except Unavailable:
            return self.expires_at is not None and self.clock() < self.expires_at
        self.expires_at = lease.expires_at
        return True

    async def release(self) -> None:
        """Let a standby take over at once (clean shutdown): mark our lease expired, if it is still ours."""
        expired = LeaderLease(holder=self.holder, expires_at=self.clock())
        with contextlib.suppress(Conflict, Unavailable):
            await self.store.write(LEASE_KEY, expired, self.revision)
        self.expires_at = None
