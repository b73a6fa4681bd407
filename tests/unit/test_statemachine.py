"""The pure state machine: every allowed transition, every refusal, fencing, retries and backoff."""

from datetime import UTC, datetime, timedelta

import pytest

from gyoza.core import statemachine as sm
from gyoza.errors import InvalidRequest, InvalidTransition, StaleAttempt
from gyoza.schema import (
    FailureReason,
    OutputSpec,
    ReasonCode,
    RetryPolicy,
    RunRecord,
    RunState,
    ValueType,
    WorkerEventIn,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def new_run(**fields: object) -> RunRecord:
    record = RunRecord(id="r1", image="img", created_at=NOW, updated_at=NOW, attempts=[], **fields)  # type: ignore[arg-type]
    return sm.start_record(record, NOW)


def event(type_: str, attempt: int = 1, msg: str | int = "", **payload: object) -> WorkerEventIn:
    """A report of w1, the worker ``running`` assigns the run to."""
    return WorkerEventIn(attempt=attempt, worker_id="w1", type=type_, msg=msg, payload=payload)  # type: ignore[arg-type]


def running(**fields: object) -> RunRecord:
    record = sm.assign(new_run(**fields), 1, "w1", [0], NOW)
    result = sm.apply_worker_event(record, event("STARTED"), NOW)
    assert result is not None
    return result


def test_a_new_run_is_pending_with_a_created_event() -> None:
    record = new_run()
    assert record.state == RunState.PENDING
    assert record.current.state_reason.code == ReasonCode.QUEUED
    assert [(e.id, e.type, e.state) for e in record.events] == [(1, "CREATED", RunState.PENDING)]


def test_full_lifecycle_writes_one_event_per_change_with_increasing_ids() -> None:
    record = running()
    sm.apply_worker_event(record, event("PROGRESS", msg=40), NOW)
    sm.apply_worker_event(record, event("COMPLETED", outputs={"label": "cat"}), NOW)
    assert record.state == RunState.COMPLETED
    assert record.current.outputs == {"label": "cat"}
    assert [e.type for e in record.events] == ["CREATED", "ASSIGNED", "STARTED", "PROGRESS", "COMPLETED"]
    assert [e.id for e in record.events] == [1, 2, 3, 4, 5]
    assert record.events[-1].state == RunState.COMPLETED


@pytest.mark.parametrize(
    ("current", "target"),
    [(s, t) for s in RunState for t in RunState if t not in sm.ALLOWED[s]],
)
def test_every_transition_outside_the_table_is_refused_naming_both_states(current: RunState, target: RunState) -> None:
    with pytest.raises(InvalidTransition) as info:
        sm.check_transition(current, target)
    assert current.value in info.value.message and target.value in info.value.message


def test_completed_is_final() -> None:
    record = running()
    sm.apply_worker_event(record, event("COMPLETED"), NOW)
    for command in (lambda: sm.retry(record, NOW), lambda: sm.cancel(record, NOW)):
        with pytest.raises(InvalidTransition):
            command()


def test_a_stale_attempt_is_fenced_off() -> None:
    record = running(retry_policy=RetryPolicy(max_attempts=2, retry_on=[FailureReason.EXIT_CODE]))
    sm.apply_worker_event(record, event("FAILED", reason="EXIT_CODE", exit_code=1), NOW)
    assert record.current.number == 2
    with pytest.raises(StaleAttempt):
        sm.apply_worker_event(record, event("COMPLETED", attempt=1), NOW)


def test_repeated_worker_reports_are_idempotent() -> None:
    record = running()
    assert sm.apply_worker_event(record, event("STARTED"), NOW) is None
    sm.apply_worker_event(record, event("COMPLETED"), NOW)
    assert sm.apply_worker_event(record, event("COMPLETED"), NOW) is None


def test_cancel_before_start_is_immediate_and_idempotent() -> None:
    record = new_run()
    sm.cancel(record, NOW)
    assert record.state == RunState.CANCELLED
    assert record.current.state_reason.code == ReasonCode.USER
    assert sm.cancel(record, NOW) is None


def test_cancel_of_a_running_run_is_a_request_until_the_worker_confirms() -> None:
    record = running()
    sm.cancel(record, NOW)
    assert record.state == RunState.RUNNING and record.current.cancel_requested
    assert sm.cancel(record, NOW) is None
    sm.apply_worker_event(record, event("CANCELLED"), NOW)
    assert record.state == RunState.CANCELLED


def test_invalid_outputs_fail_the_attempt_naming_the_field() -> None:
    specs = {"score": OutputSpec(type=ValueType.FLOAT), "label": OutputSpec(type=ValueType.STRING)}
    record = running(output_specs=specs)
    sm.apply_worker_event(record, event("COMPLETED", outputs={"score": "high", "label": "cat"}), NOW)
    assert record.state == RunState.FAILED
    assert record.current.state_reason.code == ReasonCode.OUTPUT_INVALID
    assert "outputs.score" in record.current.state_reason.message


def test_missing_required_outputs_are_output_missing() -> None:
    record = running(output_specs={"label": OutputSpec(type=ValueType.STRING)})
    sm.apply_worker_event(record, event("COMPLETED", outputs={}), NOW)
    assert record.current.state_reason.code == ReasonCode.OUTPUT_MISSING


def test_progress_must_be_an_int_from_0_to_100() -> None:
    record = running()
    for bad in (101, -1, "50"):
        with pytest.raises(InvalidRequest):
            sm.apply_worker_event(record, event("PROGRESS", msg=bad), NOW)
    sm.apply_worker_event(record, event("PROGRESS", msg=100), NOW)
    assert record.current.progress == 100


def test_failure_retried_per_policy_with_backoff() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_seconds=2, retry_on=[FailureReason.EXIT_CODE])
    record = running(retry_policy=policy)
    sm.apply_worker_event(record, event("FAILED", reason="EXIT_CODE", exit_code=3, error="boom"), NOW)
    assert record.state == RunState.PENDING
    assert record.current.number == 2
    assert record.current.state_reason.code == ReasonCode.RETRY_BACKOFF
    assert record.current.not_before == NOW + timedelta(seconds=2)
    assert record.attempts[0].state == RunState.FAILED and record.attempts[0].error == "boom"
    assert [e.type for e in record.events][-2:] == ["FAILED", "RETRIED"]


def test_failure_not_in_retry_on_is_final() -> None:
    record = running(retry_policy=RetryPolicy(max_attempts=3, retry_on=[FailureReason.TIMEOUT]))
    sm.apply_worker_event(record, event("FAILED", reason="EXIT_CODE", exit_code=1), NOW)
    assert record.state == RunState.FAILED
    assert record.current.state_reason.code == ReasonCode.EXIT_CODE


def test_worker_loss_is_retried_up_to_three_attempts_even_with_max_attempts_1() -> None:
    record = running()
    for attempt in (1, 2, 3):
        assert record.current.number == attempt
        if attempt > 1:
            sm.assign(record, attempt, "w1", [], NOW)
            sm.apply_worker_event(record, event("STARTED", attempt=attempt), NOW)
        sm.fail(record, FailureReason.WORKER_LOST, "worker w1 lost", None, NOW)
    assert record.state == RunState.FAILED
    assert record.current.number == 3


def test_worker_loss_of_a_cancel_requested_run_cancels_it() -> None:
    record = running()
    sm.cancel(record, NOW)
    sm.fail(record, FailureReason.WORKER_LOST, "lost", None, NOW)
    assert record.state == RunState.CANCELLED


@pytest.mark.parametrize(("attempt", "expected"), [(1, 1.0), (2, 3.0), (3, 9.0), (4, 20.0)])
def test_backoff_grows_and_is_capped(attempt: int, expected: float) -> None:
    policy = RetryPolicy(backoff_seconds=1, backoff_multiplier=3, max_backoff_seconds=20)
    assert sm.backoff_seconds(policy, attempt) == expected


def test_unassign_returns_the_run_to_the_queue() -> None:
    record = sm.assign(new_run(), 1, "w1", [0, 1], NOW)
    sm.unassign(record, 1, "worker w1 evicted", NOW)
    assert record.state == RunState.PENDING
    assert record.current.worker_id is None and record.current.gpu_ids == []
    assert record.events[-1].type == "UNASSIGNED"


def test_reprioritise_only_while_waiting() -> None:
    record = new_run()
    assert sm.reprioritise(record, 5, NOW) is None
    sm.reprioritise(record, 90, NOW)
    assert record.priority == 90
    with pytest.raises(InvalidTransition):
        sm.reprioritise(running(), 1, NOW)


def test_event_list_is_bounded_keeping_state_changes() -> None:
    record = running()
    for n in range(sm.MAX_EVENTS + 50):
        sm.apply_worker_event(record, event("PROGRESS", msg=n % 101), NOW)
    assert len(record.events) == sm.MAX_EVENTS
    assert [e.type for e in record.events[:3]] == ["CREATED", "ASSIGNED", "STARTED"]


def test_a_worker_that_lost_an_unassigned_attempt_cannot_report_for_it() -> None:
    record = sm.assign(new_run(), 1, "w1", [], NOW)
    sm.unassign(record, 1, "worker w1 evicted", NOW)
    sm.assign(record, 1, "w2", [], NOW)
    late = WorkerEventIn(attempt=1, worker_id="w1", type="STARTED")
    with pytest.raises(StaleAttempt):
        sm.apply_worker_event(record, late, NOW)
    sm.apply_worker_event(record, WorkerEventIn(attempt=1, worker_id="w2", type="STARTED"), NOW)
    assert record.state == RunState.RUNNING


@pytest.mark.parametrize("state", ["PENDING", "ASSIGNED", "RUNNING"])
def test_manual_retry_only_from_failed_or_cancelled(state: str) -> None:
    record = new_run()
    if state != "PENDING":
        sm.assign(record, 1, "w1", [], NOW)
    if state == "RUNNING":
        sm.apply_worker_event(record, event("STARTED"), NOW)
    with pytest.raises(InvalidTransition) as info:
        sm.retry(record, NOW)
    assert state in info.value.message
    assert len(record.attempts) == 1


def test_a_worker_gives_back_an_attempt_it_has_not_started() -> None:
    record = sm.assign(new_run(), 1, "w1", [], NOW)
    sm.apply_worker_event(record, WorkerEventIn(attempt=1, worker_id="w1", type="UNASSIGNED"), NOW)
    assert record.state == RunState.PENDING
    assert record.events[-1].type == "UNASSIGNED"
    assert sm.apply_worker_event(record, WorkerEventIn(attempt=1, worker_id="w1", type="UNASSIGNED"), NOW) is None
    sm.assign(record, 1, "w2", [], NOW)
    sm.apply_worker_event(record, WorkerEventIn(attempt=1, worker_id="w2", type="STARTED"), NOW)
    with pytest.raises(InvalidTransition):
        sm.apply_worker_event(record, WorkerEventIn(attempt=1, worker_id="w2", type="UNASSIGNED"), NOW)


def test_only_the_holding_worker_may_write_an_attempt() -> None:
    record = running()  # attempt 1 held by w1
    with pytest.raises(StaleAttempt) as other:
        sm.apply_worker_event(record, WorkerEventIn(attempt=1, worker_id="w2", type="COMPLETED"), NOW)
    assert other.value.details == [{"field": "worker_id", "problem": "the attempt is held by w1"}]
    sm.fence_worker(record, 1, "w1")  # logs: the holder may write

    pending = new_run()  # held by no worker
    with pytest.raises(StaleAttempt) as nobody:
        sm.fence_worker(pending, 1, "w1")
    assert "PENDING" in nobody.value.message and "no worker" in nobody.value.message
    assert record.state == RunState.RUNNING and pending.state == RunState.PENDING
