"""The scheduler's model, pure: queue order, ledger reservations, and back-off due times on an injected clock."""

from __future__ import annotations

from datetime import timedelta

from gyoza.core import statemachine as sm
from gyoza.core.placement import Demand
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
