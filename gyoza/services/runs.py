"""Runs: create, read, cancel, retry, reprioritise and apply worker events.

Every change is ``RecordStore.mutate`` (compare-and-set on the run's revision) around a state-machine function, so
concurrent writers never lose each other's updates and every change carries its event. When a change leaves the run
PENDING (created, retried, re-queued), a ``RunRequested`` message is published for the scheduler after the write;
the scheduler also rebuilds its queue from KV, so a crash between the two loses nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from gyoza.bus import names
from gyoza.bus.port import Bus
from gyoza.bus.records import RecordExists, RecordMissing, RecordStore
from gyoza.core import statemachine as sm
from gyoza.core.retention import stamp_expiry, ttl_seconds
from gyoza.core.specs import resolve_inputs
from gyoza.core.views import assignment, run_view
from gyoza.errors import GyozaError, InvalidInputs, InvalidRequest, RunNotFound, Unavailable
from gyoza.schema import (
    IDEMPOTENCY_KEY_PATTERN,
    AdHocRunIn,
    Constraints,
    FailureReason,
    IdempotencyEntry,
    OpDefinition,
    Retention,
    RetryPolicy,
    RunFromDefinitionIn,
    RunOverrides,
    RunRecord,
    RunRequested,
    RunState,
    RunTemplate,
    StateReason,
    WorkerCommand,
    WorkerEventIn,
)
from gyoza.services.clock import utcnow
from gyoza.services.definitions import DefinitionService
from gyoza.services.observer import NoObserver, WriteObserver
from gyoza.services.secrets import SecretService

log = logging.getLogger(__name__)

Change = Callable[[RunRecord], RunRecord | None]
RECENT_RUNS = 4096


class RunService:
    def __init__(
        self,
        bus: Bus,
        definitions: DefinitionService,
        observer: WriteObserver | None = None,
        clock: Callable[[], datetime] = utcnow,
        retention: Retention | None = None,
        secrets: SecretService | None = None,
    ) -> None:
        self.bus = bus
        self.secrets = secrets  # releases a run's secrets into the assignment pushed to its worker
        self.retention = retention or Retention()  # the server's default (``GYOZA_RETENTION``)
        # Remembering recent runs saves the read before most writes: a run's writes (assign, STARTED, COMPLETED,
        # topic marks) mostly come from this process, right after its previous write. A finished run's writes carry
        # its retention as TTL: JetStream removes the run when it is over.
        self.store = RecordStore(
            bus.runs, RunRecord, remember=RECENT_RUNS, ttl_of=lambda record: ttl_seconds(record, self.clock())
        )
        self.idempotency = RecordStore(bus.idempotency, IdempotencyEntry)
        self.definitions = definitions
        self.observer = observer or NoObserver()
        self.clock = clock

    # --- creation ----------------------------------------------------------------------------------------------

    async def create_from_definition(
        self, name: str, body: RunFromDefinitionIn, idempotency_header: str | None, owner: str | None = None
    ) -> tuple[RunRecord, bool]:
        definition = await self.definitions.get(name, body.version)
        inputs = _checked_inputs(body.inputs, definition)
        # extra="allow": the stored definition may hold fields a newer server wrote; the run keeps them.
        stored = definition.model_dump(include=set(RunTemplate.model_fields))
        template = _with_overrides(RunTemplate.model_validate(stored, extra="allow"), body)
        return await self._create(
            template, inputs, body.priority, _idempotency_key(body.idempotency_key, idempotency_header),
            definition, body.labels, owner,
        )  # fmt: skip

    async def create_adhoc(
        self, body: AdHocRunIn, idempotency_header: str | None, owner: str | None = None
    ) -> tuple[RunRecord, bool]:
        template = RunTemplate.model_validate(body.model_dump(include=set(RunTemplate.model_fields)))
        key = _idempotency_key(body.idempotency_key, idempotency_header)
        return await self._create(template, dict(body.inputs), body.priority, key, None, body.labels, owner)

    async def _create(
        self,
        template: RunTemplate,
        inputs: dict[str, object],
        priority: int,
        idempotency_key: str | None,
        definition: OpDefinition | None,
        labels: dict[str, str],
        owner: str | None = None,
    ) -> tuple[RunRecord, bool]:
        """Returns (run, created). A repeated idempotency key returns the original run with created=False."""
        run_id = str(uuid.uuid4())
        if idempotency_key is not None:
            run_id, first = await self._claim_idempotency_key(idempotency_key, run_id)
            if not first:
                try:
                    return (await self.store.get(run_id))[0], False
                except RecordMissing:
                    pass  # the first request died before storing the run: finish its work under its id
        now = self.clock()
        record = RunRecord(
            id=run_id,
            op_definition=definition.name if definition else None,
            definition_version=definition.version if definition else None,
            inputs=inputs,
            priority=priority,
            idempotency_key=idempotency_key,
            labels=labels,
            owner=owner,
            created_at=now,
            updated_at=now,
            attempts=[],
            **template.model_dump(),
        )
        sm.start_record(record, now)
        # The run request goes out alongside the KV create: one round trip to wait for, not two. Should the create
        # fail, the scheduler finds no such run and drops the request; the run record in KV is the truth.
        created, requested = await asyncio.gather(
            self.store.create(run_id, record), self._request_scheduling(record, None), return_exceptions=True
        )
        if isinstance(created, RecordExists):
            return (await self.store.get(run_id))[0], False
        if isinstance(created, BaseException):
            raise created
        if isinstance(requested, BaseException):
            raise requested
        self.observer.run_written(record, created)
        return record, True

    async def _claim_idempotency_key(self, key: str, run_id: str) -> tuple[str, bool]:
        """Bind ``key`` to ``run_id`` for 24 h (bucket max age). Returns (bound run id, whether we bound it)."""
        digest = idempotency_digest(key)
        try:
            await self.idempotency.create(digest, IdempotencyEntry(run_id=run_id))
            return run_id, True
        except RecordExists:
            entry, _ = await self.idempotency.get(digest)
            return entry.run_id, False

    # --- reads -------------------------------------------------------------------------------------------------

    async def get(self, run_id: str) -> RunRecord:
        try:
            return (await self.store.get(run_id))[0]
        except RecordMissing:
            raise RunNotFound(f"no run with id {run_id!r}") from None

    async def get_with_revision(self, run_id: str) -> tuple[RunRecord, int]:
        try:
            return await self.store.get(run_id)
        except RecordMissing:
            raise RunNotFound(f"no run with id {run_id!r}") from None

    # --- changes -----------------------------------------------------------------------------------------------

    async def change(self, run_id: str, change: Change, notify_scheduler: bool = True) -> RunRecord:
        """Apply a state-machine change by CAS; tell the scheduler when the changed run is PENDING."""
        return (await self.change_reported(run_id, change, notify_scheduler))[0]

    async def change_reported(
        self, run_id: str, change: Change, notify_scheduler: bool = True
    ) -> tuple[RunRecord, bool]:
        """``change``, also saying whether the run changed (bulk actions count them)."""
        try:
            record, revision, changed = await self.store.mutate(run_id, self._expiring(change))
        except RecordMissing:
            raise RunNotFound(f"no run with id {run_id!r}") from None
        if changed:
            if notify_scheduler and record.state == RunState.PENDING:
                await self._request_scheduling(record, revision)
            self.observer.run_written(record, revision)
        return record, changed

    def _expiring(self, change: Change) -> Change:
        """``change``, with the changed record's ``expires_at`` matching the TTL its write gets."""

        def stamped(record: RunRecord) -> RunRecord | None:
            changed = change(record)
            return None if changed is None else stamp_expiry(changed, self.retention, self.clock())

        return stamped

    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel; a RUNNING attempt gets a cancel request, which its worker hears at once (and, should that message
        be lost, in its next heartbeat reply)."""
        return (await self.cancel_reported(run_id))[0]

    async def cancel_reported(self, run_id: str) -> tuple[RunRecord, bool]:
        """``cancel``, also saying whether the run changed."""
        try:
            record, revision, changed = await self.store.mutate(
                run_id, self._expiring(lambda r: sm.cancel(r, self.clock()))
            )
        except RecordMissing:
            raise RunNotFound(f"no run with id {run_id!r}") from None
        if changed:
            self.observer.run_written(record, revision)
            attempt = record.current
            if attempt.cancel_requested and attempt.worker_id is not None:
                command = WorkerCommand(type="cancel", run_id=record.id, attempt=attempt.number)
                await self._tell_worker(attempt.worker_id, command.model_dump_json().encode(), "cancel")
        return record, changed

    async def retry(self, run_id: str) -> RunRecord:
        return await self.change(run_id, lambda r: sm.retry(r, self.clock()))

    async def retry_reported(self, run_id: str) -> tuple[RunRecord, bool]:
        """``retry``, also saying whether the run changed."""
        return await self.change_reported(run_id, lambda r: sm.retry(r, self.clock()))

    async def reprioritise(self, run_id: str, priority: int) -> RunRecord:
        return await self.change(run_id, lambda r: sm.reprioritise(r, priority, self.clock()))

    async def apply_worker_event(self, run_id: str, event: WorkerEventIn) -> RunRecord:
        return await self.change(run_id, lambda r: sm.apply_worker_event(r, event, self.clock()))

    async def check_log_writer(self, run_id: str, attempt: int | None, worker_id: str) -> int:
        """Logs are written like events: only by the worker holding the current attempt (409 STALE_ATTEMPT).

        Returns the attempt checked (``None``: the current one)."""
        record = await self.get(run_id)
        number = record.current.number if attempt is None else attempt
        sm.fence_worker(record, number, worker_id)
        return number

    # --- scheduler commands (fenced by attempt) -------------------------------------------------------------------

    async def assign(
        self, run_id: str, attempt: int, worker_id: str, gpu_ids: list[int], known: tuple[bytes, int] | None = None
    ) -> tuple[RunRecord, int]:
        """PENDING -> ASSIGNED. Returns (record, revision) so the scheduler can tell its own write from older ones.

        ``known``: the run's record (JSON, revision) as the scheduler last saw it, so the write needs no read first
        while nobody changed the run since; otherwise the compare-and-set fails and the run is read again."""
        try:
            record, revision, _ = await self.store.mutate(
                run_id, lambda r: sm.assign(r, attempt, worker_id, gpu_ids, self.clock()), known
            )
        except RecordMissing:
            raise RunNotFound(f"no run with id {run_id!r}") from None
        self.observer.run_written(record, revision)
        told = assignment(run_view(record))
        if self.secrets is not None:
            told = await self.secrets.release(told, record.secrets)
        await self._tell_worker(worker_id, told.model_dump_json().encode(), "assignment")
        return record, revision

    async def unassign(self, run_id: str, attempt: int, message: str) -> RunRecord:
        return await self.change(run_id, lambda r: sm.unassign(r, attempt, message, self.clock()))

    async def fail_attempt(self, run_id: str, attempt: int, reason: FailureReason, message: str) -> RunRecord:
        """Fail an attempt on the server's initiative (worker lost); the retry policy applies."""

        def change(record: RunRecord) -> RunRecord | None:
            if record.current.number != attempt or record.state not in (RunState.ASSIGNED, RunState.RUNNING):
                return None
            return sm.fail(record, reason, message, None, self.clock())

        return await self.change(run_id, change)

    async def set_pending_reason(self, run_id: str, attempt: int, reason: StateReason) -> None:
        await self.change(run_id, lambda r: sm.set_pending_reason(r, attempt, reason), notify_scheduler=False)

    async def _tell_worker(self, worker_id: str, message: bytes, what: str) -> None:
        """A core message to a NATS-mode worker. Not durable on purpose: a REST worker claims its assignments from
        the index, and every heartbeat reply carries the cancels, so a lost message only delays."""
        try:
            await self.bus.publish(names.assignments_subject(worker_id), message)
        except GyozaError as exc:
            log.info("%s message for worker %s not sent: %s", what, worker_id, exc.message)

    async def _request_scheduling(self, record: RunRecord, revision: int | None) -> None:
        """Nudge the scheduler (``revision`` None: at the run's creation, sent while it is being stored). Every
        scheduler follows the runs bucket, so a nudge NATS cannot take now must not turn the request into a 503 for a
        change that stands (issue 15 item 3)."""
        try:
            await self.bus.publish_durable(*_run_request(record, revision))
        except Unavailable as exc:
            log.warning("run %s is stored; the scheduler learns of it from the run feed (%s)", record.id, exc.message)

    async def request_scheduling_of_new(self, records: Sequence[RunRecord]) -> None:
        """``_request_scheduling`` at creation for many runs at once (a batch), pipelined."""
        try:
            await self.bus.publish_durable_many([_run_request(record, None) for record in records])
        except Unavailable as exc:
            log.warning("%d runs are stored; the scheduler learns of them from the run feed (%s)", len(records),
                        exc.message)  # fmt: skip


def _run_request(record: RunRecord, revision: int | None) -> tuple[str, bytes, str]:
    """The run request message for this version of a run: (subject, payload, msg_id)."""
    message = RunRequested(run_id=record.id, attempt=record.current.number, priority=record.priority)
    msg_id = f"{record.id}.{'created' if revision is None else revision}"
    return names.RUN_REQUESTED_SUBJECT, message.model_dump_json().encode(), msg_id


def idempotency_digest(key: str) -> str:
    """The idempotency bucket's key for an idempotency key (any string, any length)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _idempotency_key(field: str | None, header: str | None) -> str | None:
    if header is not None and not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, header):
        raise InvalidRequest(
            "the Idempotency-Key header must be 1 to 255 printable ASCII characters",
            details=[{"field": "Idempotency-Key", "problem": "expected 1 to 255 printable ASCII characters"}],
        )
    if field is not None and header is not None and field != header:
        raise InvalidRequest(
            "the Idempotency-Key header and the idempotency_key field differ",
            details=[{"field": "idempotency_key", "problem": "differs from the Idempotency-Key header"}],
        )
    return field if field is not None else header


def _with_overrides(template: RunTemplate, overrides: RunOverrides) -> RunTemplate:
    """The definition's run fields with what this run overrides (see ``RunOverrides`` for how each one combines)."""
    changes: dict[str, object] = {}
    if overrides.constraints is not None:
        changes["constraints"] = _merged_constraints(template.constraints, overrides.constraints)
    if overrides.retry_policy is not None:
        given = overrides.retry_policy.model_dump(include=overrides.retry_policy.model_fields_set)
        changes["retry_policy"] = RetryPolicy.model_validate(template.retry_policy.model_dump() | given)
    if overrides.env is not None:
        changes["env"] = template.env | overrides.env
    if overrides.tags is not None:
        changes["tags"] = overrides.tags
    if "timeout_seconds" in overrides.model_fields_set:  # null too: this run has no time limit
        changes["timeout_seconds"] = overrides.timeout_seconds
    if overrides.webhooks:
        changes["webhooks"] = [*template.webhooks, *overrides.webhooks]
    if overrides.concurrency is not None:
        changes["concurrency"] = overrides.concurrency
    if overrides.retention is not None:
        given = overrides.retention.model_dump(include=overrides.retention.model_fields_set)
        changes["retention"] = Retention.model_validate(template.retention.model_dump() | given)
    return template.model_copy(update=changes)


def _merged_constraints(base: Constraints, given: Constraints) -> Constraints:
    merged = base.model_dump() | given.model_dump(include=given.model_fields_set)
    if "gpus" not in given.model_fields_set and not base.gpus:
        merged["gpus"] = None  # the definition asked for no GPU: a VRAM override implies one (SPEC §2.1)
    return Constraints.model_validate(merged)


def _checked_inputs(inputs: dict[str, object], definition: OpDefinition) -> dict[str, object]:
    resolved, problems = resolve_inputs(inputs, definition.input_specs)
    if problems:
        raise InvalidInputs(f"inputs do not match the input specs of {definition.name}", details=problems)
    return resolved
