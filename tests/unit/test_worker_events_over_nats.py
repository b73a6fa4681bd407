"""A NATS-mode worker's events (``gyoza.workers.<id>.events``) over the in-memory bus: applied like POST
/runs/{id}/events, fenced by the worker id of the subject and the attempt, refused with the same errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gyoza.bus import names
from gyoza.bus.memory import MemoryBus
from gyoza.errors import InvalidRequest, RunNotFound, StaleAttempt
from gyoza.schema import AdHocRunIn, RunState, WorkerEventIn
from gyoza.services.clock import ManualClock
from gyoza.services.definitions import DefinitionService
from gyoza.services.fleet import WorkerReports
from gyoza.services.runs import RunService
from gyoza.worker.natslink import report_body

RUN = {"image": "busybox", "constraints": {"cpu": 1, "ram_mb": 64}}


@pytest.fixture
async def served() -> AsyncIterator[tuple[MemoryBus, RunService]]:
    clock = ManualClock()
    bus = MemoryBus(clock.time)
    runs = RunService(bus, DefinitionService(bus, clock=clock.utcnow), clock=clock.utcnow)
    reports = WorkerReports(bus, runs)
    await reports.start()
    yield bus, runs
    await reports.stop()
    await bus.close()


async def report(bus: MemoryBus, subject_worker: str, run_id: str, **event: object) -> bytes:
    body = WorkerEventIn.model_validate({"worker_id": subject_worker, **event})
    return await bus.request(names.events_subject(subject_worker), report_body(run_id, body), 5)


async def test_the_holder_drives_its_run_to_completion(served: tuple[MemoryBus, RunService]) -> None:
    bus, runs = served
    record, _ = await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None)
    await runs.assign(record.id, 1, "w1", [])
    assert await report(bus, "w1", record.id, attempt=1, type="STARTED") == b"{}"
    await report(bus, "w1", record.id, attempt=1, type="COMPLETED", payload={"exit_code": 0})
    assert (await runs.get(record.id)).state == RunState.COMPLETED


async def test_other_workers_stale_attempts_and_bad_bodies_are_refused(served: tuple[MemoryBus, RunService]) -> None:
    bus, runs = served
    record, _ = await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None)
    await runs.assign(record.id, 1, "w1", [])
    with pytest.raises(StaleAttempt) as other:
        await report(bus, "w-forger", record.id, attempt=1, type="COMPLETED")
    assert [d["field"] for d in other.value.details] == ["worker_id"]
    with pytest.raises(StaleAttempt) as stale:
        await report(bus, "w1", record.id, attempt=2, type="STARTED")
    assert [d["field"] for d in stale.value.details] == ["attempt"]
    # The body names another worker than the subject: refused before anything is read.
    forged = report_body(record.id, WorkerEventIn(attempt=1, worker_id="w1", type="COMPLETED"))
    with pytest.raises(InvalidRequest) as confused:
        await bus.request(names.events_subject("w2"), forged, 5)
    assert [d["field"] for d in confused.value.details] == ["worker_id"]
    with pytest.raises(InvalidRequest) as bad:
        await bus.request(names.events_subject("w1"), b'{"run_id": "x", "attempt": 0}', 5)
    assert {d["field"] for d in bad.value.details} >= {"run_id", "attempt", "type"}
    with pytest.raises(RunNotFound):
        await report(bus, "w1", "00000000-0000-0000-0000-000000000000", attempt=1, type="STARTED")
    assert (await runs.get(record.id)).state == RunState.ASSIGNED
