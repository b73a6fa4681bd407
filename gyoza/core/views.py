"""How the API shows stored records: a run with its current attempt, its attempts, a worker with its reservations.

A view shows the fields this version knows and no others: fields a newer server stored (kept in the record, see
``gyoza.schema.Record``) stay out of the answers, so every answer matches this server's OpenAPI description.
"""

from __future__ import annotations

from dataclasses import dataclass

from gyoza.schema import (
    TERMINAL_STATES,
    Assignment,
    AttemptView,
    ExecutionSummary,
    GpuView,
    OpRun,
    ResourceAmounts,
    RunRecord,
    RunState,
    WorkerRecord,
    WorkerRunRef,
    WorkerView,
    known_fields,
)


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
    return known_fields(_run_view(record))


def _run_view(record: RunRecord) -> OpRun:
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
        webhooks=record.webhooks,  # their secrets are undeclared fields: known_fields leaves them out
        retention=record.retention,
        expires_at=record.expires_at,
        secrets=record.secrets,
        max_concurrent=record.max_concurrent,
        concurrency=record.concurrency,
        keep_warm_seconds=record.keep_warm_seconds,
        max_instances=record.max_instances,
        owner=record.owner,
        usage=attempt.usage,
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
        labels=record.labels,
        batch_id=record.batch_id,
        created_at=record.created_at,
        updated_at=record.updated_at,
        started_at=attempt.started_at,
        finished_at=attempt.finished_at,
    )


def attempt_views(record: RunRecord) -> list[AttemptView]:
    return [
        known_fields(
            AttemptView(**attempt.model_dump(), events=[e for e in record.events if e.attempt == attempt.number])
        )
        for attempt in record.attempts
    ]


@dataclass(frozen=True)
class Reservation:
    """What one ASSIGNED or RUNNING attempt holds on its worker."""

    run_id: str
    attempt: int
    state: RunState
    cpu: float
    ram_mb: int
    vram_mb: int
    gpu_ids: list[int]


def worker_view(record: WorkerRecord, reservations: list[Reservation]) -> WorkerView:
    """Totals, reserved and free resources (free = total - reserved), per GPU too, and the runs holding them."""
    gpu_reserved: dict[int, int] = {}
    for held in reservations:
        for index in held.gpu_ids:
            gpu_reserved[index] = gpu_reserved.get(index, 0) + held.vram_mb
    resources = record.resources
    totals = ResourceAmounts(cpu=resources.cpu, ram_mb=resources.ram_mb, vram_mb=sum(g.vram_mb for g in resources.gpus))
    reserved = ResourceAmounts(
        cpu=sum(h.cpu for h in reservations),
        ram_mb=sum(h.ram_mb for h in reservations),
        vram_mb=sum(gpu_reserved.values()),
    )
    return WorkerView(
        id=record.id,
        status=record.status,
        tags=record.tags,
        images=record.images,
        warm=record.warm,
        version=record.version,
        totals=totals,
        reserved=reserved,
        free=ResourceAmounts(
            cpu=max(totals.cpu - reserved.cpu, 0.0),
            ram_mb=max(totals.ram_mb - reserved.ram_mb, 0),
            vram_mb=max(totals.vram_mb - reserved.vram_mb, 0),
        ),
        gpus=[
            GpuView(
                index=g.index,
                uuid=g.uuid,
                name=g.name,
                vram_mb=g.vram_mb,
                reserved_vram_mb=gpu_reserved.get(g.index, 0),
                free_vram_mb=max(g.vram_mb - gpu_reserved.get(g.index, 0), 0),
            )
            for g in resources.gpus
        ],
        running=[WorkerRunRef(run_id=h.run_id, attempt=h.attempt, state=h.state) for h in reservations],
        registered_at=record.registered_at,
        last_heartbeat=record.last_heartbeat,
    )


def assignment(run: OpRun) -> Assignment:
    """What a worker is told to run, from the API view of an ASSIGNED run."""
    return Assignment(
        run_id=run.id,
        attempt=run.current_attempt,
        image=run.image,
        command=run.command,
        inputs=run.inputs,
        env=run.env,
        constraints=run.constraints,
        gpu_ids=run.gpu_ids,
        timeout_seconds=run.timeout_seconds,
        op_definition=run.op_definition,
        definition_version=run.definition_version,
        output_specs=run.output_specs,
        keep_warm_seconds=run.keep_warm_seconds,
        max_instances=run.max_instances,
    )
