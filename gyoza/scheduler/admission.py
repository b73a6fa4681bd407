"""What holds a run back besides room on the workers: its concurrency groups (a definition's ``max_concurrent``, a
concurrency key's limit) and its key's quota; and the order between keys at equal priority (a fair share by quota
weight). Reads the ledger, which counts every place the scheduler hands out before the write that hands it out."""

from __future__ import annotations

from collections.abc import Callable

from gyoza.core.placement import Demand, limit_reason, quota_reason, quota_shortfall
from gyoza.scheduler.ledger import Ledger
from gyoza.scheduler.queue import QueuedRun
from gyoza.schema import Quota, StateReason

QuotaOf = Callable[[str], tuple[Quota, str] | None]
NOTHING_HELD = (0.0, 0.0, 0.0, 0.0)


class Admission:
    def __init__(self, ledger: Ledger, quota_of: QuotaOf | None = None) -> None:
        """``quota_of``: a key id's quota and the key's name, if it has one."""
        self.ledger = ledger
        self.quota_of = quota_of

    def order(self, run: QueuedRun) -> tuple[float, ...]:
        """Priority first, then the owner holding the fewest places for its weight, then age. With no owners
        (every share equal) it is the queue's own order."""
        owner = run.demand.owner
        found = self.quota_of(owner) if owner and self.quota_of is not None else None
        weight = found[0].weight if found is not None else 1
        return (-run.priority, self.ledger.places.get(owner, 0) / weight, run.created_at, run.token)

    def held_back(self, demand: Demand) -> StateReason | None:
        """Why runs of ``demand`` may not take a place now whatever the room: a full concurrency group, a quota in
        use by the key's other runs. None when nothing holds them back."""
        full = self.ledger.full_limit(demand) if demand.limits else None
        if full is not None:
            return limit_reason(*full)
        found = self.quota_of(demand.owner) if demand.owner and self.quota_of is not None else None
        if found is None:
            return None
        quota, name = found
        shortfall = quota_shortfall(demand, self.ledger.owned.get(demand.owner, NOTHING_HELD), quota)
        return None if shortfall is None else quota_reason(name, shortfall)
