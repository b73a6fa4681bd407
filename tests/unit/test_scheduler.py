"""The scheduler over the in-memory bus, with a manual clock: placement, liveness and eviction, retry back-off,
and the side effects that follow from the services' writes (assignment and cancel messages)."""

from __future__ import annotations

import asyncio

import pytest

from gyoza.errors import InvalidRequest, Unavailable
from gyoza.schema import AdHocRunIn, Assignment, RunState, WorkerCommand, WorkerEventIn, WorkerStatus
from tests.unit.twin import WORKER_TIMEOUT_S, Twin, twin
from tests.waiting import until


def adhoc(cpu: float = 1, **fields: object) -> AdHocRunIn:
    return AdHocRunIn.model_validate({"image": "busybox", "constraints": {"cpu": cpu, "ram_mb": 64}, **fields})


async def test_a_pending_run_is_placed_and_its_worker_told() -> None:
    async with twin() as t:
        messages, subscription = await t.messages_to("w1")
        await t.heartbeat("w1")
        record, _ = await t.runs.create_adhoc(adhoc(), None)
        sent = Assignment.model_validate_json(await asyncio.wait_for(messages.get(), 5))
        assert (sent.run_id, sent.attempt) == (record.id, 1)
        stored = await t.runs.get(record.id)
        assert (stored.state, stored.current.worker_id) == (RunState.ASSIGNED, "w1")
        await subscription.stop()


async def test_the_best_run_goes_first_and_the_rest_wait_for_room() -> None:
    async with twin() as t:
        low, _ = await t.runs.create_adhoc(adhoc(cpu=3), None)
        high, _ = await t.runs.create_adhoc(adhoc(cpu=3, priority=9), None)
        await t.heartbeat("w1", cpu=4)
        await until(lambda: t.scheduler.state.ledger.held, 5, what="a placement")
        assert (await t.runs.get(high.id)).state == RunState.ASSIGNED
        assert (await t.runs.get(low.id)).state == RunState.PENDING  # 3 + 3 CPUs do not fit on 4
        worker = t.scheduler.state.ledger.workers["w1"]
        assert worker.cpu_free == 1


async def test_a_silent_worker_is_evicted_once_its_timeout_passes_on_the_clock() -> None:
    async with twin() as t:
        await t.heartbeat("w1")
        record, _ = await t.runs.create_adhoc(adhoc(), None)
        await until(lambda: t.scheduler.state.ledger.held.get(record.id), 5, what="the assignment")
        t.clock.advance(WORKER_TIMEOUT_S - 1)
        await t.scheduler.liveness.check()
        assert (await t.workers.get("w1")).status == WorkerStatus.ONLINE  # type: ignore[union-attr]
        t.clock.advance(2)
        await t.scheduler.liveness.check()
        assert (await t.workers.get("w1")).status == WorkerStatus.OFFLINE  # type: ignore[union-attr]
        back = await t.runs.get(record.id)
        assert (back.state, back.current.number) == (RunState.PENDING, 1)  # an unclaimed assignment: re-queued


async def test_a_lost_running_attempt_is_retried_after_its_back_off() -> None:
    async with twin() as t:
        await t.heartbeat("w1")
        policy = {"max_attempts": 2, "backoff_seconds": 30}
        record, _ = await t.runs.create_adhoc(adhoc(retry_policy=policy), None)
        # Stored, not only reserved: a worker reports STARTED once the assignment reached it (after the write).
        await until(lambda: _assigned(t, record.id), 5, what="the assignment")
        await t.runs.apply_worker_event(record.id, WorkerEventIn(attempt=1, worker_id="w1", type="STARTED"))
        t.clock.advance(WORKER_TIMEOUT_S + 1)
        await t.heartbeat("w2")
        await t.scheduler.liveness.check()
        failed = await t.runs.get(record.id)
        assert failed.attempts[0].state == RunState.FAILED and failed.current.number == 2
        await until(lambda: record.id in t.scheduler.state.delayed, 5, what="the back-off")
        t.clock.advance(29)
        t.scheduler.wake()
        await asyncio.sleep(0.05)
        assert (await t.runs.get(record.id)).state == RunState.PENDING
        t.clock.advance(2)
        await t.heartbeat("w2")
        t.scheduler.wake()
        await until(lambda: t.scheduler.state.ledger.held.get(record.id), 5, what="the retry placed")
        placed = await t.runs.get(record.id)
        assert (placed.state, placed.current.worker_id) == (RunState.ASSIGNED, "w2")


async def test_a_cancel_reaches_the_running_worker_from_the_service() -> None:
    async with twin() as t:
        messages, subscription = await t.messages_to("w1")
        await t.heartbeat("w1")
        record, _ = await t.runs.create_adhoc(adhoc(), None)
        await asyncio.wait_for(messages.get(), 5)  # the assignment
        await t.runs.apply_worker_event(record.id, WorkerEventIn(attempt=1, worker_id="w1", type="STARTED"))
        await t.runs.cancel(record.id)
        command = WorkerCommand.model_validate_json(await asyncio.wait_for(messages.get(), 5))
        assert (command.type, command.run_id, command.attempt) == ("cancel", record.id, 1)
        assert await t.heartbeat("w1", running=[(record.id, 1)]) == [command]  # and in the heartbeat reply
        await subscription.stop()


async def test_a_refused_heartbeat_reaches_a_standby_as_the_same_error() -> None:
    """FleetService is how a standby server forwards a REST heartbeat to the leader."""
    async with twin() as t:
        with pytest.raises(InvalidRequest) as refused:
            await t.fleet.heartbeat("w1", b'{"resources": {"cpu": -1}}')
        assert refused.value.status == 400
        assert {d["field"] for d in refused.value.details} >= {"resources.cpu", "resources.ram_mb"}


async def test_no_leader_means_unavailable() -> None:
    async with twin(leader=False) as t:
        with pytest.raises(Unavailable):
            await t.fleet.heartbeat("w1", b'{"resources": {"cpu": 1, "ram_mb": 1}}')


async def test_a_drained_worker_keeps_its_run_gets_no_new_one_and_stays_drained() -> None:
    async with twin() as t:
        await t.heartbeat("w1")
        first, _ = await t.runs.create_adhoc(adhoc(), None)
        await until(lambda: t.scheduler.state.ledger.held.get(first.id), 5, what="the first placement")
        drained = await t.workers.drain("w1")
        await t.scheduler.liveness.reload("w1")
        second, _ = await t.runs.create_adhoc(adhoc(), None)
        t.clock.advance(WORKER_TIMEOUT_S)  # due for a record refresh: the heartbeat rewrites it
        await t.heartbeat("w1", running=[(first.id, 1)])
        assert drained.status == WorkerStatus.DRAINING
        assert (await t.workers.get("w1")).status == WorkerStatus.DRAINING  # type: ignore[union-attr]
        assert (await t.runs.get(first.id)).current.worker_id == "w1"
        await asyncio.sleep(0.05)
        assert (await t.runs.get(second.id)).state == RunState.PENDING


async def _assigned(t: Twin, run_id: str) -> bool:
    return (await t.runs.get(run_id)).state == RunState.ASSIGNED
