"""When a finished run expires: its own ``retention`` for the state it finished in, else the server's default,
counted from when it finished.

Pure: ``RunService`` stamps ``expires_at`` on every write of a run, and the run store gives a finished run's write
the seconds left until then as JetStream TTL (``ttl_seconds``), so the record and its expiry always agree, however
often a finished run is written again (topic marks). A write that leaves the run unfinished (a retry) carries no
TTL: the new message replaces the one that would have expired.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from gyoza.schema import TERMINAL_STATES, Retention, RunRecord, duration_seconds


def retention_seconds(record: RunRecord, default: Retention) -> int | None:
    """How long this run is kept once finished in its current state; None while unfinished or kept forever."""
    state = record.current.state
    if state not in TERMINAL_STATES:
        return None
    field = state.value.lower()
    duration = getattr(record.retention, field) or getattr(default, field)
    return None if duration is None else duration_seconds(duration)


def stamp_expiry(record: RunRecord, default: Retention, now: datetime) -> RunRecord:
    """The record with ``expires_at`` set (or cleared) for a write about to happen at ``now``."""
    seconds = retention_seconds(record, default)
    finished = record.current.finished_at or now
    record.expires_at = None if seconds is None else finished + timedelta(seconds=seconds)
    return record


def ttl_seconds(record: RunRecord, now: datetime) -> int | None:
    """The TTL of a write of ``record`` at ``now``: whole seconds left until ``expires_at`` (at least 1, JetStream's
    smallest), None for a run kept until written again."""
    if record.expires_at is None or record.current.state not in TERMINAL_STATES:
        return None
    return max(1, math.ceil((record.expires_at - now).total_seconds()))
