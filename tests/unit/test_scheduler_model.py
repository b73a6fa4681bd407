"""The scheduler's model, pure: queue order, ledger reservations, and back-off due times on an injected clock."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from gyoza.core import statemachine as sm
from gyoza.core.placement import Demand, best_worker, fit
from gyoza.scheduler import state as state_module
from gyoza.scheduler.ledger import Held, Ledger
from gyoza.scheduler.queue import PendingQueue, QueuedRun
from gyoza.scheduler.state import ClusterState
from gyoza.schema import FailureReason, RunRecord, RunState, WorkerRecord
from gyoza.services.clock import ManualClock

SMALL = Demand(cpu=1, ram_mb=64, vram_mb=0, gpus=0, tags=frozenset())
BIG = Demand(cpu=4, ram_mb=64, vram_mb=0, gpus=0, tags=frozenset())


def queued(run_id: str, priority: int = 0, created_at: float = 0.0, demand: Demand = SMALL) -> QueuedRun:
    return QueuedRun(run_id=run_id, attempt=1, priority=priority, created_at=created_at, demand=demand)


def best(queue: PendingQueue) -> str:
    return min((run for _, run in queue.heads()), key=lambda run: run.key).run_id


def test_priority_first_then_oldest_first_across_lanes() -> None:
    queue = PendingQueue()
    for run in (queued("old", created_at=1), queued("new", created_at=2), queued("big-urgent", 5, 3, BIG)):
        queue.push(run)
    order = []
    while len(queue):
        run_id = best(queue)
        head = next(run for _, run in queue.heads() if run.run_id == run_id)
        queue.pop(head)
        order.append(run_id)
    assert order == ["big-urgent", "old", "new"]


def test_a_reprioritised_run_moves_and_a_removed_one_is_skipped() -> None:
    queue = PendingQueue()
    for run_id, created in (("a", 1), ("b", 2), ("c", 3)):
        queue.push(queued(run_id, created_at=created))
    queue.push(queued("c", priority=9, created_at=3))
    queue.remove("c")
    assert best(queue) == "a" and len(queue) == 2


def worker(worker_id: str, cpu: float) -> WorkerRecord:
    now = ManualClock().utcnow()
    return WorkerRecord.model_validate(
        {"id": worker_id, "status": "ONLINE", "resources": {"cpu": cpu, "ram_mb": 1024}, "registered_at": now,
         "last_heartbeat": now}
    )  # fmt: skip


def test_the_ledger_reserves_moves_and_releases() -> None:
    ledger = Ledger()
    ledger.upsert_worker(worker("w1", 4), alive=True)
    ledger.upsert_worker(worker("w2", 4), alive=True)
    ledger.reserve(Held("r", 1, "w1", BIG, [], RunState.ASSIGNED))
    assert (ledger.workers["w1"].cpu_free, ledger.workers["w2"].cpu_free) == (0, 4)
    ledger.reserve(Held("r", 1, "w2", BIG, [], RunState.ASSIGNED))  # moved: the old place is free again
    assert (ledger.workers["w1"].cpu_free, ledger.workers["w2"].cpu_free) == (4, 0)
    ledger.release("r")
    assert ledger.workers["w2"].cpu_free == 4 and not ledger.on_worker("w2")


def failed_run(clock: ManualClock, backoff_s: float) -> RunRecord:
    now = clock.utcnow()
    record = RunRecord.model_validate(
        {"id": "r1", "image": "busybox", "constraints": {"cpu": 1, "ram_mb": 64}, "created_at": now,
         "updated_at": now, "attempts": [], "retry_policy": {"max_attempts": 3, "backoff_seconds": backoff_s}}
    )  # fmt: skip
    sm.start_record(record, now)
    sm.assign(record, 1, "w1", [], now)
    return sm.fail(record, FailureReason.WORKER_LOST, "lost", None, now)


def test_a_retry_waits_out_its_back_off_on_the_injected_clock() -> None:
    clock = ManualClock()
    state = ClusterState(clock)
    state.apply(failed_run(clock, backoff_s=30), revision=1)
    assert "r1" in state.delayed and "r1" not in state.queue
    clock.advance(29)
    assert state.promote_due(clock.time()) == (clock.utcnow() + timedelta(seconds=1)).timestamp()
    clock.advance(1)
    assert state.promote_due(clock.time()) is None and "r1" in state.queue


def test_backoff_grows_and_is_capped() -> None:
    policy = failed_run(ManualClock(), 10).retry_policy.model_copy(update={"max_backoff_seconds": 25})
    assert [sm.backoff_seconds(policy, n) for n in (1, 2, 3)] == [10, 20, 25]


def test_the_remembered_best_worker_is_always_the_one_a_full_search_finds() -> None:
    """Placements (mostly of one demand, as in a burst), reservations reported by the feed, releases, workers
    joining, draining and coming back, in a seeded random order: after each step, the ledger's best worker is the
    one ``placement.best_worker`` finds among all workers."""
    rng = random.Random(10)
    ledger = Ledger()
    for step in range(3000):
        action = rng.random()
        if action < 0.03 or not ledger.workers:
            ledger.upsert_worker(worker(f"w{rng.randrange(6)}", rng.choice((8, 12, 16))), alive=True)
        elif action < 0.05:
            ledger.set_schedulable(rng.choice(list(ledger.workers)), rng.random() < 0.5)
        elif action < 0.5 and ledger.held:
            ledger.release(rng.choice(list(ledger.held)))
        elif action < 0.6:  # a reservation the feed reports (another leader's placement), not this ledger's choice
            place = ledger.workers[rng.choice(list(ledger.workers))]
            if fit(BIG, place) is not None:
                ledger.reserve(Held(f"r{step}", 1, place.worker_id, BIG, [], RunState.ASSIGNED))
        else:
            demand = BIG if action > 0.9 else SMALL
            target = ledger.best_worker(demand)
            if target is not None:
                ledger.reserve(Held(f"r{step}", 1, target[0].worker_id, demand, target[1], RunState.ASSIGNED))
        remembered, searched = ledger.best_worker(SMALL), best_worker(SMALL, ledger.workers.values())
        assert (remembered and remembered[0].worker_id) == (searched and searched[0].worker_id), step


def pending_run(run_id: str, priority: int = 5) -> RunRecord:
    now = ManualClock().utcnow()
    record = RunRecord.model_validate(
        {"id": run_id, "image": "busybox", "constraints": {"cpu": 1, "ram_mb": 64}, "priority": priority,
         "created_at": now, "updated_at": now, "attempts": []}
    )  # fmt: skip
    sm.start_record(record, now)
    return record


def test_the_model_keeps_a_waiting_run_s_latest_version_until_it_leaves_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(state_module, "RECORDS_KEPT", 2)
    state = ClusterState(ManualClock())
    state.apply(pending_run("r1"), revision=1)
    reprioritised = pending_run("r1", priority=9)
    state.apply(reprioritised, revision=2)
    assert state.records["r1"] == (reprioritised.model_dump_json().encode(), 2)
    state.apply(pending_run("r2"), revision=3)
    state.apply(pending_run("r3"), revision=4)
    assert set(state.records) == {"r1", "r2"}  # bounded: r3 is read from KV when its turn comes
    assert len(state.queue) == 3
    state.apply(sm.assign(pending_run("r1"), 1, "w1", [], ManualClock().utcnow()), revision=5)
    assert set(state.records) == {"r2"}
