"""How the API shows a stored run: the run plus its current attempt, and every attempt with its own timeline."""

from __future__ import annotations

from gyoza.schema import TERMINAL_STATES, AttemptView, ExecutionSummary, OpRun, RunRecord


def execution_summary(record: RunRecord) -> ExecutionSummary | None:
    attempt = record.current
    if attempt.state not in TERMINAL_STATES:
        return None
    duration_ms = None
    if attempt.started_at and attempt.finished_at:
        duration_ms = int((attempt.finished_at - attempt.started_at).total_seconds() * 1000)
    return ExecutionSummary(
        duration_ms=duration_ms,
        worker_id=attempt.worker_id,
        exit_code=attempt.exit_code,
        error_message=attempt.error,
        gpu_ids=attempt.gpu_ids,
    )


def run_view(record: RunRecord) -> OpRun:
    attempt = record.current
    return OpRun(
        id=record.id,
        op_definition=record.op_definition,
        definition_version=record.definition_version,
        image=record.image,
        command=record.command,
        inputs=record.inputs,
        priority=record.priority,
        constraints=record.constraints,
        retry_policy=record.retry_policy,
        timeout_seconds=record.timeout_seconds,
        tags=record.tags,
        env=record.env,
        output_specs=record.output_specs,
        event_delivery=record.event_delivery,
        state=attempt.state,
        state_reason=attempt.state_reason,
        progress=attempt.progress,
        current_attempt=attempt.number,
        cancel_requested=attempt.cancel_requested,
        outputs=attempt.outputs,
        events=[e for e in record.events if e.attempt == attempt.number],
        worker_id=attempt.worker_id,
        gpu_ids=attempt.gpu_ids,
        execution_summary=execution_summary(record),
        idempotency_key=record.idempotency_key,
        created_at=record.created_at,
        updated_at=record.updated_at,
        started_at=attempt.started_at,
        finished_at=attempt.finished_at,
    )


def attempt_views(record: RunRecord) -> list[AttemptView]:
    return [
        AttemptView(
            **attempt.model_dump(),
            events=[e for e in record.events if e.attempt == attempt.number],
        )
        for attempt in record.attempts
    ]
