"""How long a finished run is kept (issue 12.5): a duration per terminal state, enforced by JetStream's
per-message TTL on the write that finishes the run (``gyoza.core.retention``)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, StringConstraints

from gyoza.schema._base import Part

FOREVER = "forever"
DURATION_PATTERN = r"^(forever|[1-9][0-9]{0,6}[smhd])$"
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Ten years: beyond it a "retention" means "forever", and JetStream's TTL header stays far from any limit.
MAX_SECONDS = 3650 * 86400

Duration = Annotated[
    str,
    StringConstraints(pattern=DURATION_PATTERN),
    Field(description='a whole number and a unit (s, m, h, d), e.g. "7d", or "forever"'),
]


class Retention(Part):
    """Per terminal state, how long the run is kept after it got there; null (or absent): the server's default
    (``GYOZA_RETENTION``); ``"forever"``: kept whatever the default says."""

    completed: Duration | None = None
    failed: Duration | None = None
    cancelled: Duration | None = None


def duration_seconds(duration: str) -> int | None:
    """Seconds of a ``Duration`` (None for "forever")."""
    if duration == FOREVER:
        return None
    seconds = int(duration[:-1]) * UNIT_SECONDS[duration[-1]]
    if seconds > MAX_SECONDS:
        return None
    return seconds


def parse_retention(text: str) -> Retention:
    """``GYOZA_RETENTION``: ``completed=7d,failed=30d,cancelled=30d`` (any of them; empty: keep every run);
    ``ValueError`` naming what is wrong."""
    given: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        state, sep, duration = part.partition("=")
        state, duration = state.strip().lower(), duration.strip()
        if not sep or state not in Retention.model_fields:
            raise ValueError(f"{part!r}: expected <state>=<duration> with state one of completed, failed, cancelled")
        if not re.fullmatch(DURATION_PATTERN, duration):
            raise ValueError(f"{part!r}: a duration is a whole number and a unit (s, m, h, d), or forever")
        if state in given:
            raise ValueError(f"{state} is given twice")
        given[state] = duration
    return Retention(**given)
