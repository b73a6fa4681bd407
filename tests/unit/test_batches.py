"""Batches through the in-memory bus: order, all-or-nothing, idempotency keys, bulk cancel and retry counts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gyoza.bus import names
from gyoza.bus.memory import MemoryBus
from gyoza.errors import InvalidInputs, InvalidRequest
from gyoza.schema import (
    AdHocBatchIn,
    BatchFromDefinitionIn,
    OpDefinitionIn,
    RunRequested,
    RunState,
    WorkerEventIn,
)
from gyoza.services.batches import BatchService
from gyoza.services.clock import ManualClock
from gyoza.services.definitions import DefinitionService
from gyoza.services.runs import RunService

DEFINITION = {
    "name": "classify",
    "version": "1.0.0",
    "image": "busybox",
    "input_specs": {"top_k": {"type": "int", "required": False, "default": 3}, "text": {"type": "string"}},
}


async def services() -> tuple[MemoryBus, RunService, BatchService]:
    clock = ManualClock()
    bus = MemoryBus(clock.time)
    definitions = DefinitionService(bus, clock=clock.utcnow)
    await definitions.deploy(OpDefinitionIn.model_validate_json(json.dumps(DEFINITION)))
    runs = RunService(bus, definitions, clock=clock.utcnow)
    return bus, runs, BatchService(runs)


def batch(*items: dict[str, Any]) -> BatchFromDefinitionIn:
    return BatchFromDefinitionIn.model_validate_json(json.dumps({"runs": list(items)}))


async def requested(bus: MemoryBus) -> list[str]:
    found = await bus.read_subject(names.RUN_REQUESTS_STREAM, names.RUN_REQUESTED_SUBJECT, 0, 10_000)
    return [RunRequested.model_validate_json(data).run_id for _, data in found]


async def test_a_batch_keeps_request_order_and_asks_for_each_run_once() -> None:
    bus, runs, batches = await services()
    items = [{"inputs": {"text": f"t{i}"}, "labels": {"team": "ml"}} for i in range(50)]
    outcome = await batches.create_from_definition("classify", batch(*items), None)
    assert outcome.created and [r.inputs for r in outcome.runs] == [{"text": f"t{i}", "top_k": 3} for i in range(50)]
    assert {r.batch_id for r in outcome.runs} == {outcome.batch_id} and outcome.batch_id is not None
    assert all(r.state == RunState.PENDING and r.labels == {"team": "ml"} for r in outcome.runs)
    assert sorted(await requested(bus)) == sorted(r.id for r in outcome.runs)
    stored = [await runs.get(r.id) for r in outcome.runs]
    assert [s.inputs["text"] for s in stored] == [f"t{i}" for i in range(50)]


async def test_one_bad_item_refuses_the_batch_naming_every_problem_by_index() -> None:
    bus, _, batches = await services()
    items = [{"inputs": {"text": "ok"}}, {"inputs": {"text": 5}}, {"inputs": {}}, {"inputs": {"text": "x", "k": 1}}]
    with pytest.raises(InvalidInputs) as refused:
        await batches.create_from_definition("classify", batch(*items), None)
    fields = {d["field"] for d in refused.value.details}
    assert fields == {"runs[1].inputs.text", "runs[2].inputs.text", "runs[3].inputs.k"}
    assert "3 of 4 runs" in refused.value.message
    assert await bus.runs.last_revision() == 0, "nothing stored"
    assert await requested(bus) == []


async def test_a_repeated_batch_returns_the_same_runs_and_creates_nothing() -> None:
    bus, _, batches = await services()
    items = [{"inputs": {"text": str(i)}, "idempotency_key": f"order-{i}"} for i in range(5)]
    first = await batches.create_from_definition("classify", batch(*items), None)
    written = await bus.runs.last_revision()
    again = await batches.create_from_definition("classify", batch(*items), None)
    assert not again.created and [r.id for r in again.runs] == [r.id for r in first.runs]
    assert again.batch_id == first.batch_id
    assert await bus.runs.last_revision() == written
    assert len(await requested(bus)) == 5


async def test_a_partly_repeated_batch_holds_the_original_in_its_slot() -> None:
    _, _, batches = await services()
    earlier = await batches.create_from_definition(
        "classify", batch({"inputs": {"text": "a"}, "idempotency_key": "a"}), None
    )
    mixed = batch({"inputs": {"text": "new"}}, {"inputs": {"text": "a"}, "idempotency_key": "a"})
    outcome = await batches.create_from_definition("classify", mixed, None)
    assert outcome.created and outcome.runs[1].id == earlier.runs[0].id
    assert outcome.runs[0].batch_id == outcome.batch_id != earlier.batch_id


async def test_a_key_twice_in_one_batch_is_one_run_in_both_slots() -> None:
    bus, _, batches = await services()
    twice = {"inputs": {"text": "a"}, "idempotency_key": "k"}
    items = [twice, {"inputs": {"text": "b"}}, twice]
    outcome = await batches.create_from_definition("classify", batch(*items), None)
    assert outcome.runs[0].id == outcome.runs[2].id != outcome.runs[1].id
    assert len(set(await requested(bus))) == 2


async def test_the_idempotency_header_is_refused_on_a_batch() -> None:
    bus, _, batches = await services()
    with pytest.raises(InvalidRequest) as refused:
        await batches.create_adhoc(AdHocBatchIn.model_validate({"runs": [{"image": "busybox"}]}), "key-1")
    assert refused.value.details[0]["field"] == "Idempotency-Key"
    assert await bus.runs.last_revision() == 0


async def test_bulk_cancel_and_retry_count_what_changed() -> None:
    _, runs, batches = await services()
    outcome = await batches.create_adhoc(AdHocBatchIn.model_validate({"runs": [{"image": "busybox"}] * 4}), None)
    ids = [r.id for r in outcome.runs]
    await runs.assign(ids[0], 1, "w1", [])
    await runs.apply_worker_event(ids[0], WorkerEventIn(attempt=1, worker_id="w1", type="STARTED"))
    await runs.apply_worker_event(ids[0], WorkerEventIn(attempt=1, worker_id="w1", type="COMPLETED"))
    assert await batches.cancel(ids) == 3  # the COMPLETED run matched and stays as it is
    assert await batches.cancel(ids) == 0
    assert await batches.retry(ids) == 3
    assert [(await runs.get(i)).state for i in ids] == [RunState.COMPLETED] + [RunState.PENDING] * 3
