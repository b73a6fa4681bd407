"""Batches: many runs from one request, checked all together, stored all together; bulk cancel and retry.

A batch is checked whole before anything is written: one bad item refuses the request (400 naming every problem
with its index, ``runs[3].inputs.top_k``) and nothing is stored. Then the idempotency keys are claimed and the run
records created with the scheduler nudged alongside, each step pipelined (``asyncio.gather``, ``PIPELINE`` writes at
a time), so a batch of 500 waits for a handful of NATS round trips, not 1,000. The reply comes only after every
record is durable.

A key used twice in one batch means one run, shown in both slots, as it would be by two single requests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from gyoza.bus.records import RecordMissing
from gyoza.core import statemachine as sm
from gyoza.core.specs import resolve_inputs
from gyoza.errors import Conflict, InvalidInputs, InvalidRequest, RunNotFound
from gyoza.schema import (
    AdHocBatchIn,
    BatchFromDefinitionIn,
    OpDefinition,
    RunOverrides,
    RunRecord,
    RunTemplate,
)
from gyoza.services.runs import RunService, _with_overrides

# Bulk actions change this many runs at a time: enough to pipeline the CAS round trips, few enough not to flood NATS.
BULK_CONCURRENCY = 64
_NEW, _REPEAT, _SAME = "new", "repeat", "same"
# Writes in flight per batch: pipelined enough that a batch costs a few round trips, bounded so that many large
# batches at once queue at the HTTP layer rather than time out inside NATS requests (a 503 for work that was fine).
PIPELINE = 500
# The fields by which an item may change its definition's run template.
_OVERRIDES = frozenset(RunOverrides.model_fields)


@dataclass(frozen=True)
class PlannedRun:
    """One checked item of a batch: what its record is made of."""

    template: RunTemplate
    inputs: dict[str, object]
    priority: int
    idempotency_key: str | None
    definition: OpDefinition | None
    labels: dict[str, str]


@dataclass(frozen=True)
class BatchOutcome:
    runs: list[RunRecord]
    revisions: list[int]  # of each run as answered
    batch_id: str | None
    created: bool


class BatchService:
    def __init__(self, runs: RunService) -> None:
        self.runs = runs

    # --- creation ----------------------------------------------------------------------------------------------

    async def create_from_definition(
        self, name: str, body: BatchFromDefinitionIn, idempotency_header: str | None, owner: str | None = None
    ) -> BatchOutcome:
        _refuse_header(idempotency_header)
        versions = sorted({item.version for item in body.runs}, key=lambda v: v or "")
        found = await asyncio.gather(*(self.runs.definitions.get(name, version) for version in versions))
        definitions = dict(zip(versions, found, strict=True))
        # One template per version, shared by every item that overrides nothing (and so by one prototype record).
        templates = {version: _template(definition) for version, definition in definitions.items()}
        planned: list[PlannedRun] = []
        problems: list[dict[str, str]] = []
        for index, item in enumerate(body.runs):
            definition = definitions[item.version]
            inputs, wrong = resolve_inputs(item.inputs, definition.input_specs)
            problems += [{**p, "field": f"runs[{index}].{p['field']}"} for p in wrong]
            template = templates[item.version]
            if item.model_fields_set & _OVERRIDES:
                template = _with_overrides(template, item)
            planned.append(PlannedRun(template, inputs, item.priority, item.idempotency_key, definition, item.labels))
        if problems:
            raise InvalidInputs(
                f"{len({p['field'].split('.')[0] for p in problems})} of {len(body.runs)} runs do not match the "
                f"input specs of {name}; nothing was stored",
                details=problems,
            )
        return await self._store(planned, owner)

    async def create_adhoc(
        self, body: AdHocBatchIn, idempotency_header: str | None, owner: str | None = None
    ) -> BatchOutcome:
        _refuse_header(idempotency_header)
        fields = set(RunTemplate.model_fields)
        planned = [
            PlannedRun(
                RunTemplate.model_validate(item.model_dump(include=fields)),
                dict(item.inputs),
                item.priority,
                item.idempotency_key,
                None,
                item.labels,
            )
            for item in body.runs
        ]
        return await self._store(planned, owner)

    async def _store(self, planned: list[PlannedRun], owner: str | None) -> BatchOutcome:
        batch_id = str(uuid.uuid4())
        ids, slots = await self._claim_ids(planned)
        repeats = [ids[i] for i in range(len(planned)) if slots[i] == _REPEAT]
        found = dict(zip(repeats, await asyncio.gather(*(self._existing(r) for r in repeats)), strict=True))
        # A repeat whose first request died before storing its run is finished under the run id its key holds.
        to_write = [i for i in range(len(planned)) if slots[i] == _NEW or (slots[i] == _REPEAT and not found[ids[i]])]
        now = self.runs.clock()
        prototypes: dict[int, RunRecord] = {}
        records = [_record(ids[i], planned[i], batch_id, now, prototypes, owner) for i in to_write]
        written: list[tuple[RunRecord, int, bool]] = []
        for start in range(0, len(records), PIPELINE):
            written += await self._write_chunk(records[start : start + PIPELINE])
        created = [(record, revision) for (record, revision, new) in written if new]
        for record, revision in created:
            self.runs.observer.run_written(record, revision)
        by_id = {k: v for k, v in found.items() if v is not None} | {r.id: (r, rev) for r, rev, _ in written}
        runs = [by_id[run_id][0] for run_id in ids]
        revisions = [by_id[run_id][1] for run_id in ids]
        return BatchOutcome(runs, revisions, batch_id if created else _shared_batch(runs), bool(created))

    async def _claim_ids(self, planned: list[PlannedRun]) -> tuple[list[str], list[str]]:
        """Each slot's run id and where it comes from: ``_NEW`` (this request bound it), ``_REPEAT`` (a key an
        earlier request holds) or ``_SAME`` (a key an earlier slot of this batch uses)."""
        ids = [str(uuid.uuid4()) for _ in planned]
        slots = [_NEW] * len(planned)
        first_slot: dict[str, int] = {}
        for index, item in enumerate(planned):
            if item.idempotency_key is not None:
                first_slot.setdefault(item.idempotency_key, index)
        claims = await asyncio.gather(
            *(self.runs._claim_idempotency_key(key, ids[index]) for key, index in first_slot.items())
        )
        for index, (bound, first) in zip(first_slot.values(), claims, strict=True):
            ids[index], slots[index] = bound, _NEW if first else _REPEAT
        for index, item in enumerate(planned):
            key = item.idempotency_key
            if key is not None and first_slot[key] != index:
                ids[index], slots[index] = ids[first_slot[key]], _SAME
        return ids, slots

    async def _existing(self, run_id: str) -> tuple[RunRecord, int] | None:
        try:
            return await self.runs.store.get(run_id)
        except RecordMissing:
            return None

    async def _write_chunk(self, records: list[RunRecord]) -> list[tuple[RunRecord, int, bool]]:
        """Create the records and send their run requests, all at once (as the single create does: should a create
        fail, the scheduler finds no such run and drops its request)."""
        results, _ = await asyncio.gather(
            self.runs.store.create_many([(record.id, record) for record in records]),
            self.runs.request_scheduling_of_new(records),
        )
        written: list[tuple[RunRecord, int, bool]] = []
        for record, result in zip(records, results, strict=True):
            if isinstance(result, int):
                written.append((record, result, True))
            else:  # a repeat whose first request stored its run meanwhile
                stored, revision = await self.runs.store.get(record.id)
                written.append((stored, revision, False))
        return written

    # --- bulk actions ------------------------------------------------------------------------------------------

    async def cancel(self, run_ids: Sequence[str]) -> int:
        """Cancel each run (the single cancel, by CAS); returns how many changed."""
        return await _count_changed(run_ids, self.runs.cancel_reported)

    async def retry(self, run_ids: Sequence[str]) -> int:
        """Retry each run (the single retry, by CAS); returns how many changed."""
        return await _count_changed(run_ids, self.runs.retry_reported)


def _refuse_header(header: str | None) -> None:
    if header is not None:
        raise InvalidRequest(
            "a batch takes an idempotency_key per run, not the Idempotency-Key header",
            details=[
                {"field": "Idempotency-Key", "problem": "not taken by batch requests; set runs[i].idempotency_key"}
            ],
        )


def _template(definition: OpDefinition) -> RunTemplate:
    stored = definition.model_dump(include=set(RunTemplate.model_fields))
    return RunTemplate.model_validate(stored, extra="allow")


def _record(
    run_id: str, item: PlannedRun, batch_id: str, now: datetime, prototypes: dict[int, RunRecord], owner: str | None
) -> RunRecord:
    """The new run's record: a shallow copy of its template's prototype (validated once per template and batch)
    with the run's own fields. The parts they share (constraints, env, specs...) are never changed in place: a run
    changes later only as a fresh decode from KV, inside a compare-and-set."""
    prototype = prototypes.get(id(item.template))
    if prototype is None:
        prototype = prototypes[id(item.template)] = _prototype(item, now)
    own = {
        "id": run_id, "inputs": item.inputs, "priority": item.priority, "idempotency_key": item.idempotency_key,
        "labels": item.labels, "batch_id": batch_id, "events": [], "owner": owner,
    }  # fmt: skip
    return sm.start_record(prototype.model_copy(update=own), now)


def _prototype(item: PlannedRun, now: datetime) -> RunRecord:
    definition = item.definition
    return RunRecord(
        id="prototype",
        op_definition=definition.name if definition else None,
        definition_version=definition.version if definition else None,
        created_at=now,
        updated_at=now,
        attempts=[],
        **item.template.model_dump(),
    )


def _shared_batch(runs: list[RunRecord]) -> str | None:
    """The batch every run belongs to, when they all belong to the same one."""
    batches = {run.batch_id for run in runs}
    return batches.pop() if len(batches) == 1 else None


async def _count_changed(run_ids: Sequence[str], action: Callable[[str], Awaitable[tuple[RunRecord, bool]]]) -> int:
    limit = asyncio.Semaphore(BULK_CONCURRENCY)

    async def one(run_id: str) -> bool:
        async with limit:
            try:
                return (await action(run_id))[1]
            except (Conflict, RunNotFound):  # finished (or gone) since it matched: counted, not changed
                return False

    return sum(await asyncio.gather(*(one(run_id) for run_id in run_ids)))
