"""Batches: create many runs in one request, follow a batch, cancel or retry every run matching a filter."""

from __future__ import annotations

import re
from typing import TypeVar

from pydantic import BaseModel
from quart import Blueprint, Response, request
from quart_schema import document_request, document_response

from gyoza.errors import InvalidJson, InvalidRequest, NotFound
from gyoza.schema import (
    BATCH_ID_PATTERN,
    AdHocBatchIn,
    BatchFromDefinitionIn,
    BatchView,
    BulkResult,
    RunBatch,
    RunFilterIn,
    RunState,
)
from gyoza.server.access import request_owner
from gyoza.server.context import ctx
from gyoza.server.http import checked_name, json_response, list_response, read_body, refusals
from gyoza.services.batches import BatchOutcome, BatchService
from gyoza.services.removal import RunRemoval

blueprint = Blueprint("batches", __name__)
M = TypeVar("M", bound=BaseModel)

_ITEM = re.compile(r"^runs\.(\d+)")
_FINISHED = (RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED)


async def _batch_body(model: type[M]) -> M:
    """The body, with each item's problems named by its index: ``runs[3].inputs`` (pydantic says ``runs.3``)."""
    try:
        return await read_body(model)
    except InvalidJson:
        raise
    except InvalidRequest as exc:
        exc.details = [{**d, "field": _ITEM.sub(r"runs[\1]", str(d.get("field", "")))} for d in exc.details]
        raise


def _answer(outcome: BatchOutcome) -> Response:
    """A ``RunBatch``, put together from the views the index has just built for these runs."""
    index = ctx().index
    views = [index.run_body(record, revision) for record, revision in zip(outcome.runs, outcome.revisions, strict=True)]
    response = list_response(views, object="batch_runs", batch_id=outcome.batch_id)
    response.status_code = 201 if outcome.created else 200
    return response


@blueprint.post("/definitions/<name>/runs/batch")
@document_request(BatchFromDefinitionIn)
@document_response(RunBatch, 201)
@document_response(RunBatch, 200)
@refusals(400, 404, 413, 415)
async def create_definition_batch(name: str) -> Response:
    """Create 1 to 1,000 runs of a definition at once (body up to 8 MiB).

    All or nothing: one bad item refuses the whole batch with 400 listing every problem by index
    (``runs[3].inputs.top_k``), and nothing is stored. 201 with the runs in request order once every run is durable;
    an item whose ``idempotency_key`` was used before gets the original run in its slot (200 when every item did);
    a key used twice in one batch gives the same run in both slots. Every new run carries the new ``batch_id``.
    """
    body = await _batch_body(BatchFromDefinitionIn)
    service = BatchService(ctx().runs)
    header = request.headers.get("Idempotency-Key")
    return _answer(await service.create_from_definition(checked_name(name), body, header, request_owner()))


@blueprint.post("/runs/batch")
@document_request(AdHocBatchIn)
@document_response(RunBatch, 201)
@document_response(RunBatch, 200)
@refusals(400, 413, 415)
async def create_adhoc_batch() -> Response:
    """Create 1 to 1,000 ad hoc runs at once: the same rules as the batch of a definition."""
    body = await _batch_body(AdHocBatchIn)
    header = request.headers.get("Idempotency-Key")
    return _answer(await BatchService(ctx().runs).create_adhoc(body, header, request_owner()))


@blueprint.get("/batches/<batch_id>")
@document_response(BatchView)
@refusals(404)
async def get_batch(batch_id: str) -> Response:
    """A batch's runs counted by state, and its aggregate progress."""
    if not re.fullmatch(BATCH_ID_PATTERN, batch_id):
        raise NotFound(f"no batch with id {batch_id!r}")
    await ctx().runs_listener.catch_up()  # runs another server process just created count too
    counts, progress_sum = ctx().index.batch_summary(batch_id)
    total = sum(counts.values())
    if total == 0:
        raise NotFound(f"no batch with id {batch_id!r}")
    view = BatchView(
        id=batch_id,
        total=total,
        counts={state: counts.get(state.value, 0) for state in RunState},
        finished=sum(counts.get(state.value, 0) for state in _FINISHED),
        progress=round(progress_sum / total, 2),
    )
    return json_response(view)


async def _matching(action: str) -> list[str]:
    body = await read_body(RunFilterIn)
    if body.batch_id is None and not body.labels and body.state is None and body.reason is None:
        raise InvalidRequest(
            f"give a filter (batch_id, labels, state or reason): {action} without one would match every run",
            details=[{"field": "body", "problem": "at least one of batch_id, labels, state, reason is required"}],
        )
    await ctx().runs_listener.catch_up()  # runs another server process just created match too
    return ctx().index.matching_run_ids(body)


@blueprint.post("/runs/cancel")
@document_request(RunFilterIn)
@document_response(BulkResult)
@refusals(400, 413, 415)
async def cancel_runs() -> Response:
    """Cancel every run matching the filter, each as POST /runs/{id}/cancel would; finished runs are left alone.

    ``matched`` counts the runs the filter found, ``changed`` those this request cancelled (or asked to stop)."""
    run_ids = await _matching("cancel")
    changed = await BatchService(ctx().runs).cancel(run_ids)
    return json_response(BulkResult(matched=len(run_ids), changed=changed))


@blueprint.post("/runs/purge")
@document_request(RunFilterIn)
@document_response(BulkResult)
@refusals(400, 413, 415)
async def purge_runs() -> Response:
    """Delete every finished run matching the filter, each as DELETE /runs/{id} would (admin); runs not finished
    are left alone.

    ``matched`` counts the runs the filter found, ``changed`` those this request deleted."""
    run_ids = await _matching("purge")
    changed = await RunRemoval(ctx().runs).purge(run_ids)
    return json_response(BulkResult(matched=len(run_ids), changed=changed))


@blueprint.post("/runs/retry")
@document_request(RunFilterIn)
@document_response(BulkResult)
@refusals(400, 413, 415)
async def retry_runs() -> Response:
    """Retry every FAILED or CANCELLED run matching the filter, each as POST /runs/{id}/retry would.

    ``matched`` counts the runs the filter found, ``changed`` those this request started again."""
    run_ids = await _matching("retry")
    changed = await BatchService(ctx().runs).retry(run_ids)
    return json_response(BulkResult(matched=len(run_ids), changed=changed))
