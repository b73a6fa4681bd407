"""The run state machine (SPEC §2.5): the one place that decides whether a run may change, and how.

Every writer of a run record (API, scheduler, eviction) calls these functions inside a compare-and-set loop. Each
function changes the record it is given (a fresh copy read from KV) and returns it, or returns ``None`` when the
request is already satisfied (an idempotent repeat), so the caller writes nothing. A state change and the event that
explains it are made together, so one CAS stores both (SPEC §3, invariant 4).

Pure: no I/O and no clock; ``now`` is always passed in.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from gyoza.core.specs import output_failure
from gyoza.errors import InvalidRequest, InvalidTransition, StaleAttempt
from gyoza.schema import (
    Attempt,
    CompletedPayload,
    EventType,
    FailurePayload,
    FailureReason,
    ReasonCode,
    RetryPolicy,
    RunRecord,
    RunState,
    StateReason,
    WorkerEventIn,
    validation_problems,
)
from gyoza.schema import Event as RunEvent

S = RunState
_P = TypeVar("_P", CompletedPayload, FailurePayload)

ALLOWED: dict[RunState, frozenset[RunState]] = {
    S.PENDING: frozenset({S.ASSIGNED, S.CANCELLED}),
    # ASSIGNED -> FAILED: the container never started (image missing, start error); the worker says why.
    S.ASSIGNED: frozenset({S.RUNNING, S.PENDING, S.CANCELLED, S.FAILED}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.FAILED: frozenset({S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING}),
    S.COMPLETED: frozenset(),
}

# Worker loss is retried even when the policy allows a single attempt (SPEC §5.6).
WORKER_LOST_MIN_ATTEMPTS = 3
# A run record must stay well under the NATS message limit: beyond this many events, the oldest PROGRESS/INFO
# events are dropped (state changes are always kept).
MAX_EVENTS = 500
_DROPPABLE = frozenset({EventType.PROGRESS, EventType.INFO})


def check_transition(current: RunState, target: RunState) -> None:
    if target not in ALLOWED[current]:
        raise InvalidTransition(f"run is {current.value}; it cannot become {target.value}")


def add_event(
    record: RunRecord,
    type_: EventType,
    now: datetime,
    msg: str | int = "",
    payload: dict[str, Any] | None = None,
) -> None:
    record.events.append(
        RunEvent(
            id=record.next_event_id,
            attempt=record.current.number,
            type=type_,
            t=now,
            msg=msg,
            payload=payload or {},
            state=record.state,
        )
    )
    record.next_event_id += 1
    record.updated_at = now
    if len(record.events) > MAX_EVENTS:
        _drop_oldest_detail_event(record)


def _drop_oldest_detail_event(record: RunRecord) -> None:
    for index, event in enumerate(record.events):
        if event.type in _DROPPABLE:
            del record.events[index]
            return


def _move(attempt: Attempt, target: RunState, reason: ReasonCode, message: str = "") -> None:
    check_transition(attempt.state, target)
    attempt.state = target
    attempt.state_reason = StateReason(code=reason, message=message)


def new_attempt(number: int, now: datetime, not_before: datetime | None = None) -> Attempt:
    if not_before is not None and not_before > now:
        reason = StateReason(code=ReasonCode.RETRY_BACKOFF, message=f"retrying after {not_before.isoformat()}")
    else:
        not_before = None
        reason = StateReason(code=ReasonCode.QUEUED, message="waiting for a worker")
    return Attempt(number=number, state=S.PENDING, state_reason=reason, created_at=now, not_before=not_before)


def start_record(record: RunRecord, now: datetime) -> RunRecord:
    """Give a freshly built record its first attempt and CREATED event."""
    record.attempts = [new_attempt(1, now)]
    add_event(record, EventType.CREATED, now, "run created")
    return record


# --- user and scheduler commands ---------------------------------------------------------------------------------


def cancel(record: RunRecord, now: datetime) -> RunRecord | None:
    """User cancel: before start it is immediate; a RUNNING run gets a cancel request its worker acts on."""
    attempt = record.current
    if attempt.state == S.CANCELLED or (attempt.state == S.RUNNING and attempt.cancel_requested):
        return None
    if attempt.state == S.RUNNING:
        attempt.cancel_requested = True
        add_event(record, EventType.INFO, now, "cancel requested", {"cancel_requested": True})
        return record
    _move(attempt, S.CANCELLED, ReasonCode.USER, "cancelled by user")
    attempt.finished_at = now
    add_event(record, EventType.CANCELLED, now, "cancelled by user")
    return record


def retry(record: RunRecord, now: datetime) -> RunRecord:
    """Manual retry: a FAILED or CANCELLED run gets a new PENDING attempt."""
    if record.state not in (S.FAILED, S.CANCELLED):
        # Not check_transition alone: ASSIGNED -> PENDING is allowed for unassign, yet retrying an ASSIGNED run would
        # orphan its live attempt.
        raise InvalidTransition(
            f"run is {record.state.value}; it cannot become {S.PENDING.value} by retry (only FAILED or CANCELLED)"
        )
    _begin_next_attempt(record, now, None, "retried by user")
    return record


def reprioritise(record: RunRecord, priority: int, now: datetime) -> RunRecord | None:
    if record.state not in (S.PENDING, S.ASSIGNED):
        raise InvalidTransition(f"run is {record.state.value}; priority can change only while PENDING or ASSIGNED")
    if record.priority == priority:
        return None
    record.priority = priority
    record.updated_at = now
    return record


def assign(record: RunRecord, attempt_number: int, worker_id: str, gpu_ids: list[int], now: datetime) -> RunRecord:
    _fence(record, attempt_number)
    attempt = record.current
    _move(attempt, S.ASSIGNED, ReasonCode.ASSIGNED, f"assigned to worker {worker_id}")
    attempt.worker_id, attempt.gpu_ids, attempt.assigned_at = worker_id, list(gpu_ids), now
    add_event(record, EventType.ASSIGNED, now, worker_id, {"worker_id": worker_id, "gpu_ids": list(gpu_ids)})
    return record


def unassign(record: RunRecord, attempt_number: int, message: str, now: datetime) -> RunRecord:
    """ASSIGNED -> PENDING: the worker was evicted, drained or gave the run back."""
    _fence(record, attempt_number)
    attempt = record.current
    _move(attempt, S.PENDING, ReasonCode.QUEUED, message)
    attempt.worker_id, attempt.gpu_ids, attempt.assigned_at = None, [], None
    add_event(record, EventType.UNASSIGNED, now, message)
    return record


# --- worker events -----------------------------------------------------------------------------------------------


def _fence(record: RunRecord, attempt_number: int) -> None:
    if attempt_number != record.current.number:
        raise StaleAttempt(
            f"attempt {attempt_number} of run {record.id} is not current (current is {record.current.number})",
            details=[{"field": "attempt", "problem": f"current attempt is {record.current.number}"}],
        )


def fence_worker(record: RunRecord, attempt_number: int, worker_id: str) -> None:
    """Only the worker holding the current attempt may write it (events, logs); anyone else gets STALE_ATTEMPT."""
    _fence(record, attempt_number)
    holder = record.current.worker_id
    if worker_id == holder:
        return
    if holder is None:
        message = f"attempt {attempt_number} of run {record.id} is {record.state.value} and held by no worker"
        problem = "no worker holds the attempt"
    else:
        message = f"attempt {attempt_number} of run {record.id} belongs to worker {holder}"
        problem = f"the attempt is held by {holder}"
    raise StaleAttempt(f"{message}, not {worker_id}", details=[{"field": "worker_id", "problem": problem}])


def apply_worker_event(record: RunRecord, event: WorkerEventIn, now: datetime) -> RunRecord | None:
    """Apply an event the worker holding ``(run, attempt)`` reports; anyone else's, or a stale attempt's, is refused."""
    if not _is_repeated_give_back(record, event):
        fence_worker(record, event.attempt, event.worker_id)
    handler = _WORKER_HANDLERS[event.type]
    return handler(record, event, now)


def _is_repeated_give_back(record: RunRecord, event: WorkerEventIn) -> bool:
    # The worker repeats a give-back whose answer it missed: the attempt is already back in the queue, held by no
    # one, and the repeat changes nothing.
    current = record.current
    return (
        event.type == "UNASSIGNED"
        and event.attempt == current.number
        and current.state == S.PENDING
        and current.worker_id is None
    )


def _on_started(record: RunRecord, event: WorkerEventIn, now: datetime) -> RunRecord | None:
    attempt = record.current
    if attempt.state == S.RUNNING:
        return None
    _move(attempt, S.RUNNING, ReasonCode.RUNNING, "running")
    attempt.started_at = now
    add_event(record, EventType.STARTED, now, event.msg or "started", event.payload)
    return record


def _require_active(record: RunRecord, what: str) -> None:
    if record.state not in (S.ASSIGNED, S.RUNNING):
        raise InvalidTransition(f"run is {record.state.value}; {what} is accepted only while ASSIGNED or RUNNING")


def _on_progress(record: RunRecord, event: WorkerEventIn, now: datetime) -> RunRecord | None:
    _require_active(record, "PROGRESS")
    if not isinstance(event.msg, int) or not 0 <= event.msg <= 100:
        raise InvalidRequest(
            "PROGRESS needs msg to be an int from 0 to 100",
            details=[{"field": "msg", "problem": "expected an int from 0 to 100"}],
        )
    record.current.progress = event.msg
    add_event(record, EventType.PROGRESS, now, event.msg, event.payload)
    return record


def _on_info(record: RunRecord, event: WorkerEventIn, now: datetime) -> RunRecord | None:
    _require_active(record, "INFO")
    add_event(record, EventType.INFO, now, event.msg, event.payload)
    return record


def _on_completed(record: RunRecord, event: WorkerEventIn, now: datetime) -> RunRecord | None:
    if record.state == S.COMPLETED:
        return None
    payload = _parse(CompletedPayload, event.payload)
    record.current.usage = payload.usage
    failure = output_failure(payload.outputs, record.output_specs or {})
    if failure is not None:
        return fail(record, *failure, payload.exit_code, now)
    attempt = record.current
    _move(attempt, S.COMPLETED, ReasonCode.SUCCEEDED, "completed")
    attempt.outputs, attempt.exit_code, attempt.finished_at, attempt.progress = payload.outputs, 0, now, 100
    add_event(record, EventType.COMPLETED, now, event.msg or "completed", {"outputs": payload.outputs})
    return record


def _on_failed(record: RunRecord, event: WorkerEventIn, now: datetime) -> RunRecord | None:
    if record.state == S.FAILED:
        return None
    payload = _parse(FailurePayload, event.payload)
    record.current.usage = payload.usage
    message = payload.error or (str(event.msg) if event.msg != "" else payload.reason.value)
    return fail(record, payload.reason, message, payload.exit_code, now)


def _on_cancelled(record: RunRecord, event: WorkerEventIn, now: datetime) -> RunRecord | None:
    attempt = record.current
    if attempt.state == S.CANCELLED:
        return None
    _move(attempt, S.CANCELLED, ReasonCode.USER, "cancelled by user")
    attempt.finished_at = now
    add_event(record, EventType.CANCELLED, now, event.msg or "cancelled", event.payload)
    return record


def _on_given_back(record: RunRecord, event: WorkerEventIn, now: datetime) -> RunRecord | None:
    if record.state == S.PENDING:
        return None
    message = f"given back by worker {record.current.worker_id}" + (f": {event.msg}" if event.msg else "")
    return unassign(record, event.attempt, message, now)


_WORKER_HANDLERS = {
    "STARTED": _on_started,
    "PROGRESS": _on_progress,
    "INFO": _on_info,
    "COMPLETED": _on_completed,
    "FAILED": _on_failed,
    "CANCELLED": _on_cancelled,
    "UNASSIGNED": _on_given_back,
}


def _parse(model: type[_P], payload: dict[str, Any]) -> _P:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidRequest("invalid event payload", details=validation_problems(exc, "payload")) from None


# --- failure and retries -----------------------------------------------------------------------------------------


# The most memory a grown retry asks for (the largest a run may request, ``Constraints``).
MAX_MEMORY_MB = 1 << 30


def fail(record: RunRecord, reason: FailureReason, message: str, exit_code: int | None, now: datetime) -> RunRecord:
    """Fail the current attempt and, when the retry policy says so, start the next one in the same write."""
    attempt = record.current
    if reason == FailureReason.WORKER_LOST and attempt.cancel_requested:
        # The user asked for a cancel and the machine died: the run is cancelled, not retried.
        _move(attempt, S.CANCELLED, ReasonCode.USER, "cancelled by user (worker lost before confirming)")
        attempt.finished_at = now
        add_event(record, EventType.CANCELLED, now, "cancelled by user; worker lost")
        return record
    _move(attempt, S.FAILED, ReasonCode(reason.value), message)
    attempt.exit_code, attempt.error, attempt.finished_at = exit_code, message, now
    add_event(record, EventType.FAILED, now, message, {"reason": reason.value, "exit_code": exit_code})
    delay = retry_delay(record.retry_policy, reason, attempt.number)
    if delay is not None:
        grown = _grow_after_oom(record, reason)
        message = f"automatic retry after {reason.value}" + (f" with {grown}" if grown else "")
        _begin_next_attempt(record, now, now + timedelta(seconds=delay), message)
    return record


def _grow_after_oom(record: RunRecord, reason: FailureReason) -> str:
    """Ask the next attempt for more of the memory that ran out (``retry_policy.grow_on_oom``); says what grew."""
    factor = record.retry_policy.grow_on_oom
    field = {FailureReason.OOM_KILLED: "ram_mb", FailureReason.GPU_OOM: "vram_mb"}.get(reason)
    if factor is None or field is None:
        return ""
    before = getattr(record.constraints, field)
    after = min(math.ceil(before * factor), MAX_MEMORY_MB)
    if after <= before:
        return ""
    record.constraints = record.constraints.model_copy(update={field: after})
    return f"{field} {before} -> {after}"


def retry_delay(policy: RetryPolicy, reason: FailureReason, attempt_number: int) -> float | None:
    """Seconds to wait before the next attempt, or None when the policy does not retry this failure."""
    if reason == FailureReason.WORKER_LOST:
        limit = max(policy.max_attempts, WORKER_LOST_MIN_ATTEMPTS)
    elif reason in policy.retry_on:
        limit = policy.max_attempts
    else:
        return None
    if attempt_number >= limit:
        return None
    return backoff_seconds(policy, attempt_number)


def backoff_seconds(policy: RetryPolicy, failed_attempt: int) -> float:
    """``backoff_seconds * multiplier^(n-1)``, capped at ``max_backoff_seconds``."""
    delay = policy.backoff_seconds * policy.backoff_multiplier ** (failed_attempt - 1)
    return float(min(delay, policy.max_backoff_seconds))


def _begin_next_attempt(record: RunRecord, now: datetime, not_before: datetime | None, message: str) -> None:
    attempt = new_attempt(record.current.number + 1, now, not_before)
    record.attempts.append(attempt)
    payload = {"not_before": attempt.not_before.isoformat()} if attempt.not_before else {}
    add_event(record, EventType.RETRIED, now, message, payload)


def set_pending_reason(record: RunRecord, attempt_number: int, reason: StateReason) -> RunRecord | None:
    """Refresh why a PENDING attempt waits (no event: the state does not change). A no-op once it moved on."""
    attempt = record.current
    if attempt.number != attempt_number or attempt.state != S.PENDING or attempt.state_reason == reason:
        return None
    attempt.state_reason = reason
    return record
