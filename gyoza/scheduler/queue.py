"""The pending queue, indexed by demand so that placement cost does not grow with the number of pending runs.

Runs with equal demand (cpu, RAM, VRAM, GPU count, tags) share a lane: a heap ordered by priority (high first) then
age (old first). Finding the next run to place looks only at lane heads, so its cost depends on the number of
distinct demands (a handful in practice), not on how many runs wait. Removal and re-prioritisation are lazy: an
entry is skipped when its run was removed or re-queued since.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from gyoza.core.placement import Demand

OrderKey = tuple[int, float, int]


@dataclass(slots=True)  # one small object per waiting run: 100,000 of them stay cheap to hold and to garbage-collect
class QueuedRun:
    run_id: str
    attempt: int
    priority: int
    created_at: float
    demand: Demand
    reason_code: str = ""
    reason_message: str = ""
    token: int = 0

    @property
    def key(self) -> OrderKey:
        return (-self.priority, self.created_at, self.token)


@dataclass
class Lane:
    demand: Demand
    heap: list[tuple[OrderKey, str]] = field(default_factory=list)


class PendingQueue:
    def __init__(self) -> None:
        self.lanes: dict[Demand, Lane] = {}
        self.runs: dict[str, QueuedRun] = {}
        self._tokens = itertools.count(1)

    def __len__(self) -> int:
        return len(self.runs)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self.runs

    def push(self, run: QueuedRun) -> None:
        """Add a run, or re-queue it (new attempt, new priority): the old entry becomes stale."""
        run.token = next(self._tokens)
        self.runs[run.run_id] = run
        lane = self.lanes.get(run.demand)
        if lane is None:
            lane = self.lanes[run.demand] = Lane(run.demand)
        run.demand = lane.demand  # one demand object per lane, not one per run
        heapq.heappush(lane.heap, (run.key, run.run_id))

    def remove(self, run_id: str) -> QueuedRun | None:
        return self.runs.pop(run_id, None)

    def head(self, lane: Lane) -> QueuedRun | None:
        """The best live run of a lane, dropping stale entries on the way; an emptied lane is forgotten."""
        while lane.heap:
            key, run_id = lane.heap[0]
            run = self.runs.get(run_id)
            if run is not None and run.key == key:
                return run
            heapq.heappop(lane.heap)
        self.lanes.pop(lane.demand, None)
        return None

    def pop(self, run: QueuedRun) -> None:
        """Take ``run`` (a lane head returned by ``head``) out of the queue."""
        lane = self.lanes[run.demand]
        heapq.heappop(lane.heap)
        del self.runs[run.run_id]

    def heads(self) -> Iterator[tuple[Lane, QueuedRun]]:
        for lane in list(self.lanes.values()):
            run = self.head(lane)
            if run is not None:
                yield lane, run

    def in_lane(self, demand: Demand) -> Iterator[QueuedRun]:
        """The live runs of one lane, in no particular order (for refreshing pending reasons). Safe to walk while
        the queue changes: a run pushed or placed meanwhile may be missed or seen twice."""
        lane = self.lanes.get(demand)
        if lane is None:
            return
        for key, run_id in lane.heap:
            run = self.runs.get(run_id)
            if run is not None and run.key == key:
                yield run
