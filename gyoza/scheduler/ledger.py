"""Who holds what: per-worker totals and the reservations of ASSIGNED/RUNNING attempts, per GPU for VRAM.

Free capacity is kept up to date incrementally (reserve/release), so a fit check is a few comparisons. The best
worker for a demand is remembered between placements: placing a run on it only makes it fit that demand more tightly
and leaves every other worker as it was, so it stays the best choice until it is full or anything else changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from gyoza.core import workerstate
from gyoza.core.placement import Capacity, Demand, WarmKey, best_worker, fit
from gyoza.schema import RunState, WorkerRecord


@dataclass(slots=True)
class Held:
    run_id: str
    attempt: int
    worker_id: str
    demand: Demand
    gpu_ids: list[int]
    state: RunState
    cancel_requested: bool = False
    missing_reports: int = 0


class Ledger:
    def __init__(self) -> None:
        self.workers: dict[str, Capacity] = {}
        self.held: dict[str, Held] = {}
        self.by_worker: dict[str, set[str]] = {}
        self.active: dict[str, int] = {}  # concurrency group -> attempts holding a place (``Demand.limits``)
        self.owned: dict[str, tuple[float, ...]] = {}  # key id -> what its runs hold (``Demand.amounts``)
        self.places: dict[str, int] = {}  # owner ("" for none) -> attempts holding a place, for the fair share
        # (demand, worker id) of the last full search, valid while only reservations of that demand there followed.
        self._best: tuple[Demand, str] | None = None

    def best_worker(self, demand: Demand) -> tuple[Capacity, list[int]] | None:
        """``placement.best_worker`` over every worker, without the search while the remembered choice holds."""
        if self._best is not None and self._best[0] == demand and demand.warm is None:
            worker = self.workers[self._best[1]]  # workers are never dropped from the ledger
            gpu_ids = fit(demand, worker)
            if gpu_ids is not None:
                return worker, gpu_ids
        target = best_worker(demand, self.workers.values())
        self._best = None if target is None else (demand, target[0].worker_id)
        return target

    def upsert_worker(self, record: WorkerRecord, alive: bool) -> bool:
        """Track a worker's totals, tags and whether it may get work. Returns True when it could take more now."""
        gpus = {g.index: g.vram_mb for g in record.resources.gpus}
        schedulable = alive and workerstate.schedulable(record.status)
        current = self.workers.get(record.id)
        tags, images = frozenset(record.tags), frozenset(record.images)
        warm: dict[WarmKey, list[tuple[int, ...]]] = {}
        for instance in record.warm:
            warm.setdefault((instance.definition, instance.version), []).append(tuple(instance.gpu_ids))
        if (
            current is not None
            and current.cpu_total == record.resources.cpu
            and current.ram_total == record.resources.ram_mb
            and current.gpu_total == gpus
            and current.tags == tags
            and current.schedulable == schedulable
            and current.images == images
            and current.warm == warm
        ):
            return False
        self._best = None
        self.workers[record.id] = Capacity(
            worker_id=record.id, cpu_total=record.resources.cpu, ram_total=record.resources.ram_mb,
            gpu_total=gpus, tags=tags, schedulable=schedulable, images=images, warm=warm,
        )  # fmt: skip
        self._recompute_free(record.id)
        return schedulable

    def set_schedulable(self, worker_id: str, schedulable: bool) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None and worker.schedulable != schedulable:
            worker.schedulable = schedulable
            self._best = None

    def _recompute_free(self, worker_id: str) -> None:
        worker = self.workers[worker_id]
        worker.cpu_free, worker.ram_free = worker.cpu_total, worker.ram_total
        worker.gpu_free = dict(worker.gpu_total)
        worker.warm_busy = {}
        for run_id in self.by_worker.get(worker_id, ()):
            self._take(worker, self.held[run_id], -1)

    @staticmethod
    def _take(worker: Capacity, held: Held, sign: int) -> None:
        """Apply a reservation (sign -1) or its release (sign +1) to a worker's free capacity."""
        worker.cpu_free += sign * held.demand.cpu
        worker.ram_free += sign * held.demand.ram_mb
        for index in held.gpu_ids:
            if index in worker.gpu_free:
                worker.gpu_free[index] += sign * held.demand.vram_mb
        if held.demand.warm is not None:  # it keeps one of the worker's warm instances busy, if it has one
            key = (held.demand.warm, tuple(held.gpu_ids))
            busy = worker.warm_busy.get(key, 0) - sign
            if busy > 0:
                worker.warm_busy[key] = busy
            else:
                worker.warm_busy.pop(key, None)

    def reserve(self, held: Held) -> None:
        """Record (or update) what an attempt holds; a move to another worker releases the old place first."""
        previous = self.held.get(held.run_id)
        if previous is not None:
            if (previous.worker_id, previous.attempt, previous.gpu_ids) == (held.worker_id, held.attempt, held.gpu_ids):
                previous.state, previous.cancel_requested = held.state, held.cancel_requested
                return
            self.release(held.run_id)
        if self._best is not None and self._best != (held.demand, held.worker_id):
            self._best = None  # another worker got tighter, or another demand's best changed
        self.held[held.run_id] = held
        self.by_worker.setdefault(held.worker_id, set()).add(held.run_id)
        for group, _ in held.demand.limits:
            self.active[group] = self.active.get(group, 0) + 1
        if held.demand.owner:
            self._own(held.demand, +1)
        self.places[held.demand.owner] = self.places.get(held.demand.owner, 0) + 1
        worker = self.workers.get(held.worker_id)
        if worker is not None:
            self._take(worker, held, -1)

    def release(self, run_id: str) -> Held | None:
        held = self.held.pop(run_id, None)
        if held is None:
            return None
        self.by_worker.get(held.worker_id, set()).discard(run_id)
        if held.demand.owner:
            self._own(held.demand, -1)
        left = self.places.get(held.demand.owner, 0) - 1
        if left > 0:
            self.places[held.demand.owner] = left
        else:
            self.places.pop(held.demand.owner, None)
        for group, _ in held.demand.limits:
            left = self.active[group] - 1
            if left:
                self.active[group] = left
            else:
                del self.active[group]
        self._best = None
        worker = self.workers.get(held.worker_id)
        if worker is not None:
            self._take(worker, held, +1)
        return held

    def _own(self, demand: Demand, sign: int) -> None:
        before = self.owned.get(demand.owner, (0.0, 0.0, 0.0, 0.0))
        after = tuple(max(held + sign * amount, 0.0) for held, amount in zip(before, demand.amounts(), strict=True))
        if any(after):
            self.owned[demand.owner] = after
        else:
            self.owned.pop(demand.owner, None)

    def full_limit(self, demand: Demand) -> tuple[str, int, int] | None:
        """(group, limit, active) of a concurrency limit of ``demand`` that has no room now, if any."""
        for group, limit in demand.limits:
            active = self.active.get(group, 0)
            if active >= limit:
                return group, limit, active
        return None

    def on_worker(self, worker_id: str) -> list[Held]:
        return [self.held[run_id] for run_id in self.by_worker.get(worker_id, ())]
