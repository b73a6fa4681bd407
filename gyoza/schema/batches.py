"""Batches: many runs created by one request, the batch's progress, and acting on every run matching a filter."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from gyoza.schema._base import Input, Record
from gyoza.schema.enums import ReasonCode, RunState
from gyoza.schema.runs import AdHocRunIn, Labels, OpRun, RunFromDefinitionIn

MAX_BATCH_RUNS = 1000
BATCH_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
BatchId = Annotated[str, StringConstraints(pattern=BATCH_ID_PATTERN)]
BatchSize = Field(min_length=1, max_length=MAX_BATCH_RUNS, description="1 to 1,000 runs")


class BatchFromDefinitionIn(Input):
    """POST /definitions/{name}/runs/batch: each item is the body of POST /definitions/{name}/runs."""

    runs: Annotated[list[RunFromDefinitionIn], BatchSize]


class AdHocBatchIn(Input):
    """POST /runs/batch: each item is the body of POST /runs."""

    runs: Annotated[list[AdHocRunIn], BatchSize]


class RunBatch(Record):
    """The runs of a batch request, in request order (a repeated idempotency key: the original run in its slot).

    ``batch_id`` is the new batch's id, or, when every item was a repeat, the batch their runs share (null if none)."""

    object: Literal["batch_runs"] = "batch_runs"
    batch_id: str | None
    data: list[OpRun]


class BatchView(Record):
    """GET /batches/{id}: how far a batch has got. ``progress`` averages the runs' progress, a finished run
    (COMPLETED, FAILED or CANCELLED) counting as 100."""

    id: str
    object: Literal["batch"] = "batch"
    total: int
    counts: dict[RunState, int] = Field(description="runs by state; every state is listed, 0 included")
    finished: int = Field(description="runs COMPLETED, FAILED or CANCELLED")
    progress: float = Field(ge=0, le=100)


class RunFilterIn(Input):
    """POST /runs/cancel and /runs/retry: every run matching all the given conditions. At least one is required."""

    batch_id: BatchId | None = None
    labels: Labels | None = Field(None, description="runs with every one of these labels")
    state: Annotated[list[RunState], Field(min_length=1)] | None = Field(None, description="runs in any of these")
    reason: ReasonCode | None = Field(None, description="runs whose state_reason.code is this")


class BulkResult(Record):
    """How many runs matched the filter, and how many of them this request changed (the rest were already so, or
    their state does not allow it: a finished run is not cancelled, a COMPLETED one not retried)."""

    matched: int
    changed: int
