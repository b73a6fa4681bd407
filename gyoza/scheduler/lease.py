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
from datetime import datetime, timedelta
from typing import Protocol

from gyoza.bus.port import Bus
from gyoza.bus.records import RecordExists, RecordMissing, RecordStore
from gyoza.errors import Conflict, Unavailable
from gyoza.schema import LeaderLease
from gyoza.services.clock import SYSTEM_CLOCK, Clock

LEASE_KEY = "scheduler"
# Stop acting this long before the written expiry: room for a write checked just in time to land, and for skew.
ACTING_SHARE = 0.8


class OutboxCursor(Protocol):
    """Where the topic outbox got to; carried in the lease record, so it needs no write of its own."""

    def cursor(self) -> int: ...

    def follow(self, through: int) -> None: ...


class NoOutbox:
    def cursor(self) -> int:
        return 0

    def follow(self, through: int) -> None:
        pass


class Lease:
    def __init__(
        self, bus: Bus, holder: str, ttl: float, clock: Clock = SYSTEM_CLOCK, outbox: OutboxCursor | None = None
    ) -> None:
        self.store = RecordStore(bus.leases, LeaderLease)
        self.outbox = outbox or NoOutbox()
        self.observed: LeaderLease | None = None  # the record found by the last attempt to take the lease
        self.holder = holder
        self.ttl = timedelta(seconds=ttl)
        self.acting_s = ttl * ACTING_SHARE
        self.clock = clock
        self.revision = 0
        self.renewed_at: float | None = None  # monotonic time just before the write that last took or renewed it

    def fresh(self) -> bool:
        """Held and renewed recently enough to act on (a cheap check: no NATS round trip)."""
        return self.renewed_at is not None and self.clock.monotonic() - self.renewed_at < self.acting_s

    def remaining(self) -> float:
        """Seconds left to act on the lease as last renewed (0 when not held)."""
        if self.renewed_at is None:
            return 0.0
        return max(self.renewed_at + self.acting_s - self.clock.monotonic(), 0.0)

    def _fresh_record(self) -> LeaderLease:
        return LeaderLease(
            holder=self.holder, expires_at=self.clock.utcnow() + self.ttl, outbox_through=self.outbox.cursor()
        )

    def observed_written_at(self) -> datetime | None:
        """When the record found on taking the lease was written (its holder's last renewal)."""
        return None if self.observed is None else self.observed.expires_at - self.ttl

    async def outbox_through(self) -> int:
        """The topic outbox cursor the lease record carries (0 when no leader ever wrote one)."""
        try:
            current, _ = await self.store.get(LEASE_KEY)
        except RecordMissing:
            return 0
        return current.outbox_through

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it, it expired, or it is still ours (a restart of our own renewals)."""
        started = self.clock.monotonic()
        try:
            current, revision = await self.store.get(LEASE_KEY)
        except RecordMissing:
            self.observed = None
            lease = self._fresh_record()
            try:
                self.revision = await self.store.create(LEASE_KEY, lease)
            except RecordExists:
                return False
        else:
            self.observed = current
            self.outbox.follow(current.outbox_through)
            if current.holder != self.holder and current.expires_at > self.clock.utcnow():
                return False
            lease = self._fresh_record()
            try:
                self.revision = await self.store.write(LEASE_KEY, lease, revision)
            except Conflict:
                return False
        self.renewed_at = started
        return True

    async def renew(self) -> bool:
        """Extend the lease. False once another replica took it; ``Unavailable`` when NATS did not answer (the
        caller keeps acting only while the lease is still ``fresh``)."""
        started = self.clock.monotonic()
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
        expired = LeaderLease(holder=self.holder, expires_at=self.clock.utcnow(), outbox_through=self.outbox.cursor())
        with contextlib.suppress(Conflict, Unavailable):
            await self.store.write(LEASE_KEY, expired, self.revision)
