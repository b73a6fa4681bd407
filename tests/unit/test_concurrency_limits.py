"""Concurrency limits in the scheduler (issue 13.2), over the in-memory bus: a definition's ``max_concurrent`` and a
concurrency key's limit hold however many runs wait and however much room the workers have; a run ending lets the
next one in; a group at its limit holds up no run outside it; the waiting runs say why, with the numbers."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack

from gyoza.bus.memory import MemoryBus
from gyoza.schema import (
    AdHocRunIn,
    OpDefinitionIn,
    ReasonCode,
    RunFromDefinitionIn,
    RunRecord,
    RunState,
    WorkerEventIn,
)
from gyoza.services.clock import ManualClock
from tests.unit.twin import Twin, node, twin
from tests.waiting import until


def adhoc(key: str | None = None, limit: int = 1) -> AdHocRunIn:
    concurrency = {"concurrency": {"key": key, "limit": limit}} if key else {}
    return AdHocRunIn.model_validate({"image": "busybox", "constraints": {"cpu": 1, "ram_mb": 64}, **concurrency})


async def states(t: Twin, records: list[RunRecord]) -> list[RunState]:
    return [(await t.runs.get(r.id)).state for r in records]


async def placed(t: Twin, count: int) -> None:
    """Wait until ``count`` runs hold a place, and the scheduler has nothing left in flight."""
    await until(
        lambda: len(t.scheduler.state.ledger.held) == count and not t.scheduler.state.in_flight,
        5, what=f"{count} runs placed",
    )  # fmt: skip


async def finish(t: Twin, record: RunRecord) -> None:
    for event in ("STARTED", "COMPLETED"):
        body = WorkerEventIn.model_validate({"attempt": 1, "worker_id": "w1", "type": event, "payload": {}})
        await t.runs.apply_worker_event(record.id, body)


async def test_a_definitions_max_concurrent_holds_and_an_ending_run_lets_the_next_in() -> None:
    async with twin() as t:
        name = "limited-" + uuid.uuid4().hex[:6]
        await t.runs.definitions.deploy(
            OpDefinitionIn.model_validate(
                {"name": name, "version": "1", "image": "busybox", "constraints": {"cpu": 1}, "max_concurrent": 2}
            )
        )
        body = RunFromDefinitionIn.model_validate({})
        records = [(await t.runs.create_from_definition(name, body, None))[0] for _ in range(5)]
        free, _ = await t.runs.create_adhoc(adhoc(), None)  # same demand, no limit: not held up
        await t.heartbeat("w1", cpu=16)
        await placed(t, 3)
        assert (await states(t, records)).count(RunState.ASSIGNED) == 2
        assert (await t.runs.get(free.id)).state == RunState.ASSIGNED

        await t.scheduler._refresh_reasons()
        waiting = [r for r in records if (await t.runs.get(r.id)).state == RunState.PENDING]
        reason = (await t.runs.get(waiting[0].id)).current.state_reason
        assert reason.code == ReasonCode.CONCURRENCY_LIMIT
        assert reason.message == f"definition {name} (max_concurrent): 2/2 assigned or running"

        running = [r for r in records if (await t.runs.get(r.id)).state == RunState.ASSIGNED]
        await finish(t, running[0])

        async def next_one_in() -> bool:  # the finished one left, the next one of the definition came in
            now = await states(t, records)
            return now.count(RunState.COMPLETED) == 1 and now.count(RunState.ASSIGNED) == 2

        await until(next_one_in, 5, what="the next run of the definition placed")
        await placed(t, 3)


async def test_a_concurrency_key_limits_runs_of_any_origin_together() -> None:
    async with twin() as t:
        key = "customer-" + uuid.uuid4().hex[:6]
        keyed = [(await t.runs.create_adhoc(adhoc(key, limit=3), None))[0] for _ in range(6)]
        other = [(await t.runs.create_adhoc(adhoc("someone-else", limit=1), None))[0] for _ in range(2)]
        await t.heartbeat("w1", cpu=32)
        await placed(t, 4)
        assert (await states(t, keyed)).count(RunState.ASSIGNED) == 3
        assert (await states(t, other)).count(RunState.ASSIGNED) == 1
        assert t.scheduler.state.ledger.active == {f"key:{key}": 3, "key:someone-else": 1}
        for record in keyed:
            await t.runs.cancel(record.id)  # the waiting ones and the placed ones alike
        await until(lambda: f"key:{key}" not in t.scheduler.state.ledger.active, 5, what="the key's places freed")


async def test_keys_of_equal_priority_share_the_room_fairly() -> None:
    async with twin() as t:
        first = [(await t.runs.create_adhoc(adhoc(), None, owner="team-a"))[0] for _ in range(6)]
        later = [(await t.runs.create_adhoc(adhoc(), None, owner="team-b"))[0] for _ in range(6)]
        urgent, _ = await t.runs.create_adhoc(adhoc_with_priority(9), None, owner="team-a")
        await t.heartbeat("w1", cpu=5)
        await placed(t, 5)
        # The urgent run first (priority wins), then the two keys in turn although team-a's runs are all older.
        assert (await t.runs.get(urgent.id)).state == RunState.ASSIGNED
        assert (await states(t, first)).count(RunState.ASSIGNED) == 2
        assert (await states(t, later)).count(RunState.ASSIGNED) == 2
        assert t.scheduler.state.ledger.places == {"team-a": 3, "team-b": 2}


def adhoc_with_priority(priority: int) -> AdHocRunIn:
    return AdHocRunIn.model_validate(
        {"image": "busybox", "constraints": {"cpu": 1, "ram_mb": 64}, "priority": priority}
    )


async def test_a_leader_failover_under_concurrent_submissions_admits_none_past_a_limit_or_quota() -> None:
    """Runs keep arriving, singly and from both replicas, while the scheduler moves from one to the other: the new
    leader counts what the old one placed before it places anything, so the limit holds throughout."""
    clock = ManualClock()
    bus = MemoryBus(clock.time)
    name = "limited-" + uuid.uuid4().hex[:6]
    async with AsyncExitStack() as stack:
        old = await stack.enter_async_context(node(bus, clock, "a"))
        new = await stack.enter_async_context(node(bus, clock, "b"))
        await old.runs.definitions.deploy(OpDefinitionIn.model_validate(
            {"name": name, "version": "1", "image": "busybox", "constraints": {"cpu": 1}, "max_concurrent": 3}
        ))  # fmt: skip
        body = RunFromDefinitionIn.model_validate({})

        async def submit(via: Twin, count: int) -> list[RunRecord]:
            made = await asyncio.gather(*(via.runs.create_from_definition(name, body, None) for _ in range(count)))
            return [record for record, _ in made]

        async def held(records: list[RunRecord]) -> int:
            now = await states(old, records)
            return now.count(RunState.ASSIGNED) + now.count(RunState.RUNNING)

        await old.heartbeat("w1", cpu=64)
        records = await submit(old, 10)
        await placed(old, 3)
        await old.scheduler.stop()  # it hands over the lease
        arriving = asyncio.gather(submit(old, 10), submit(new, 10))
        assert await new.scheduler.lease.acquire()
        await new.scheduler._lead()
        records += [record for batch in await arriving for record in batch]
        assigned = [r for r in records if (await old.runs.get(r.id)).state == RunState.ASSIGNED]
        await new.heartbeat("w1", cpu=64, running=[(r.id, 1) for r in assigned])
        await placed(new, 3)
        assert await held(records) == 3
        for _ in range(3):  # each run that ends lets exactly one more in
            running = [r for r in records if (await new.runs.get(r.id)).state == RunState.ASSIGNED]
            await finish(new, running[0])
            await until(lambda: _held_is(new, 3), 5, what="the next run placed")
            assert await held(records) == 3
    await bus.close()


def _held_is(t: Twin, count: int) -> bool:
    return len(t.scheduler.state.ledger.held) == count and not t.scheduler.state.in_flight
