"""The services over the in-memory bus: what each write stores and what it publishes (and nothing else)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from gyoza.bus import names
from gyoza.bus.memory import MemoryBus, subject_matches
from gyoza.errors import InvalidTransition, RunNotFound
from gyoza.schema import AdHocRunIn, Assignment, HeartbeatIn, RunRequested, RunState, WorkerEventIn
from gyoza.services.clock import ManualClock
from gyoza.services.definitions import DefinitionService
from gyoza.services.runs import RunService
from gyoza.services.workers import WorkerService

RUN = {"image": "busybox", "constraints": {"cpu": 1, "ram_mb": 64}}


def services() -> tuple[ManualClock, MemoryBus, RunService]:
    clock = ManualClock()
    bus = MemoryBus(clock.time)
    return clock, bus, RunService(bus, DefinitionService(bus, clock=clock.utcnow), clock=clock.utcnow)


async def requests(bus: MemoryBus) -> list[RunRequested]:
    found = await bus.read_subject(names.RUN_REQUESTS_STREAM, names.RUN_REQUESTED_SUBJECT, 0, 100)
    return [RunRequested.model_validate_json(data) for _, data in found]


async def test_create_stores_the_run_and_asks_for_scheduling_once() -> None:
    _, bus, runs = services()
    record, created = await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None)
    assert created and record.state == RunState.PENDING
    assert [(r.run_id, r.attempt) for r in await requests(bus)] == [(record.id, 1)]


async def test_an_idempotency_key_expires_with_its_bucket_max_age() -> None:
    clock, _, runs = services()
    body = AdHocRunIn.model_validate(RUN)
    first, _ = await runs.create_adhoc(body, "order-1")
    clock.advance(timedelta(hours=23).total_seconds())
    assert (await runs.create_adhoc(body, "order-1"))[0].id == first.id
    clock.advance(timedelta(hours=1).total_seconds())
    later, created = await runs.create_adhoc(body, "order-1")
    assert created and later.id != first.id


async def test_assign_publishes_the_assignment_and_cancel_the_cancel() -> None:
    _, bus, runs = services()
    got: asyncio.Queue[bytes] = asyncio.Queue()
    subscription = await bus.subscribe(names.assignments_subject("w1"), got.put)
    record, _ = await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None)
    await runs.assign(record.id, 1, "w1", [])
    assert Assignment.model_validate_json(await asyncio.wait_for(got.get(), 5)).run_id == record.id
    await runs.apply_worker_event(record.id, WorkerEventIn(attempt=1, worker_id="w1", type="STARTED"))
    cancelling = await runs.cancel(record.id)
    assert cancelling.current.cancel_requested and b'"cancel"' in await asyncio.wait_for(got.get(), 5)
    await runs.cancel(record.id)  # already requested: no second write, no second message
    await asyncio.sleep(0)
    assert got.empty()
    await subscription.stop()


async def test_retry_and_its_refusals() -> None:
    _, bus, runs = services()
    record, _ = await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None)
    with pytest.raises(InvalidTransition):
        await runs.retry(record.id)
    await runs.cancel(record.id)
    retried = await runs.retry(record.id)
    assert (retried.state, retried.current.number) == (RunState.PENDING, 2)
    assert [r.attempt for r in await requests(bus)] == [1, 2]
    with pytest.raises(RunNotFound):
        await runs.cancel("no-such-run")


async def test_events_drive_a_run_to_completion() -> None:
    _, _, runs = services()
    record, _ = await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None)
    await runs.assign(record.id, 1, "w1", [])
    for kind, payload in (("STARTED", {}), ("COMPLETED", {"exit_code": 0})):
        event = WorkerEventIn.model_validate({"attempt": 1, "worker_id": "w1", "type": kind, "payload": payload})
        await runs.apply_worker_event(record.id, event)
    done = await runs.get(record.id)
    assert done.state == RunState.COMPLETED and done.current.exit_code == 0


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("gyoza.workers.*.heartbeat", "gyoza.workers.w1.heartbeat", True),
        ("gyoza.workers.*.heartbeat", "gyoza.workers.w1.assignments", False),
        ("gyoza.topics.>", "gyoza.topics.a.b", True),
        ("gyoza.topics.>", "gyoza.topics", False),
        ("gyoza.runs.requested", "gyoza.runs.requested", True),
    ],
)
def test_subject_matching(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


async def test_assign_from_a_version_the_scheduler_holds_writes_without_reading_it_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, bus, runs = services()
    record, _ = await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None)
    seen = await runs.store.get_raw(record.id)
    scheduler = RunService(bus, DefinitionService(bus))  # another process: nothing in its memory

    async def no_read(key: str) -> tuple[bytes, int]:
        raise AssertionError(f"read {key}")

    monkeypatch.setattr(bus.runs, "get", no_read)
    assigned, _ = await scheduler.assign(record.id, 1, "w1", [], known=seen)
    monkeypatch.undo()
    assert assigned.state == RunState.ASSIGNED and (await runs.get(record.id)).current.worker_id == "w1"


async def test_assign_from_an_outdated_version_applies_to_the_latest_or_is_refused() -> None:
    _, bus, runs = services()
    body = AdHocRunIn.model_validate(RUN)
    (moved, _), (cancelled, _) = await runs.create_adhoc(body, None), await runs.create_adhoc(body, None)
    seen = {run.id: await runs.store.get_raw(run.id) for run in (moved, cancelled)}
    await runs.reprioritise(moved.id, 9)  # changed after the scheduler saw it
    await runs.cancel(cancelled.id)
    scheduler = RunService(bus, DefinitionService(bus))
    assigned, _ = await scheduler.assign(moved.id, 1, "w1", [], known=seen[moved.id])
    assert (assigned.state, assigned.priority) == (RunState.ASSIGNED, 9)  # the newer change is kept
    with pytest.raises(InvalidTransition):
        await scheduler.assign(cancelled.id, 1, "w1", [], known=seen[cancelled.id])
    assert (await runs.get(cancelled.id)).state == RunState.CANCELLED


async def test_a_worker_taken_for_new_whose_record_exists_is_refreshed_not_registered_again() -> None:
    clock, bus, _ = services()
    body = HeartbeatIn.model_validate({"resources": {"cpu": 4, "ram_mb": 4096}})
    registered = await WorkerService(bus, clock=clock.utcnow).record_heartbeat("w1", body, new=True)
    clock.advance(5)
    # A new leader has not heard w1 yet: it tries to create the record first, finds it, and refreshes it.
    again = await WorkerService(bus, clock=clock.utcnow).record_heartbeat("w1", body, new=True)
    assert again.registered_at == registered.registered_at and again.last_heartbeat > registered.last_heartbeat
