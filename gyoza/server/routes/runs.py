"""/runs: ad hoc runs, listing, reading, cancel, retry, reprioritise, worker events and logs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from quart import Blueprint, Response, request
from quart_schema import document_querystring, document_request, document_response

from gyoza.core.views import attempt_views, run_view
from gyoza.errors import InvalidRequest, NotFound, PayloadTooLarge
from gyoza.schema import (
    AdHocRunIn,
    AttemptList,
    EventList,
    OpRun,
    PatchRunIn,
    RunList,
    RunListQuery,
    RunState,
    WorkerEventIn,
    validation_problems,
)
from gyoza.server.context import ctx
from gyoza.server.http import MAX_LOG_BYTES, checked_run_id, json_response, list_response, query_int, read_body

blueprint = Blueprint("runs", __name__)

_CREATED_KEYS = {"created[gte]": "created_gte", "created[gt]": "created_gt",
                 "created[lte]": "created_lte", "created[lt]": "created_lt"}  # fmt: skip
_PLAIN_KEYS = ("limit", "starting_after", "ending_before", "op_definition", "image", "topic", "worker_id")


class EventsQuery(BaseModel):
    after: int = 0


class LogsQuery(BaseModel):
    attempt: int | None = None


@blueprint.post("/runs")
@document_request(AdHocRunIn)
@document_response(OpRun, 201)
async def create_adhoc_run() -> Response:
    """Create an ad hoc run from an image (no definition)."""
    body = await read_body(AdHocRunIn)
    record, created = await ctx().runs.create_adhoc(body, request.headers.get("Idempotency-Key"))
    return json_response(run_view(record), 201 if created else 200)


@blueprint.get("/runs")
@document_querystring(RunListQuery)
@document_response(RunList)
async def list_runs() -> Response:
    """Runs, newest first, with filters and Stripe-style cursors."""
    rows, has_more = ctx().index.list_runs(parse_list_query(request.args))
    return list_response(rows, object="list", has_more=has_more)


def parse_list_query(args: Any) -> RunListQuery:
    """Query string -> RunListQuery: ``created[gte]`` style keys, ``status`` as an alias of ``state``, A,B lists."""
    values: dict[str, Any] = {}
    unknown = [k for k in args if k not in _CREATED_KEYS and k not in _PLAIN_KEYS and k not in ("state", "status")]
    if unknown:
        raise InvalidRequest(
            f"unknown query parameter {unknown[0]!r}", [{"field": k, "problem": "unknown parameter"} for k in unknown]
        )
    for key in _PLAIN_KEYS:
        if key in args:
            values[key] = args[key]
    for key, field in _CREATED_KEYS.items():
        if key in args:
            values[field] = args[key]
    states = [s for key in ("state", "status") for raw in args.getlist(key) for s in raw.split(",") if s]
    if states:
        values["state"] = [s.upper() for s in states]
    if values.get("starting_after") and values.get("ending_before"):
        raise InvalidRequest(
            "use starting_after or ending_before, not both",
            [{"field": "ending_before", "problem": "cannot be combined with starting_after"}],
        )
    try:
        return RunListQuery.model_validate(values)
    except ValidationError as exc:
        raise InvalidRequest("invalid query parameters", details=_query_problems(exc)) from None


def _query_problems(exc: ValidationError) -> list[dict[str, str]]:
    names = {v: k for k, v in _CREATED_KEYS.items()}
    problems = validation_problems(exc)
    for problem in problems:
        head = problem["field"].split(".")[0]
        problem["field"] = names.get(head, head)
        if head == "state":
            problem["problem"] = f"expected one of {', '.join(s.value for s in RunState)}"
    return problems


@blueprint.get("/runs/<run_id>")
@document_response(OpRun)
async def get_run(run_id: str) -> Response:
    """A run with its current attempt's events."""
    record = await ctx().runs.get(checked_run_id(run_id))
    return json_response(run_view(record))


@blueprint.get("/runs/<run_id>/attempts")
@document_response(AttemptList)
async def list_attempts(run_id: str) -> Response:
    """Every attempt of a run, with its own events, outputs and error."""
    record = await ctx().runs.get(checked_run_id(run_id))
    return json_response(AttemptList(data=attempt_views(record)))


@blueprint.get("/runs/<run_id>/events")
@document_querystring(EventsQuery)
@document_response(EventList)
async def list_events(run_id: str) -> Response:
    """The run's events (all attempts) with id greater than ``after``, in order."""
    after = query_int("after", 0, 0, 2**53)
    record = await ctx().runs.get(checked_run_id(run_id))
    return json_response(EventList(data=[e for e in record.events if e.id > after]))


@blueprint.get("/runs/<run_id>/logs")
@document_querystring(LogsQuery)
async def get_logs(run_id: str) -> Response:
    """The captured stdout/stderr of an attempt (default: the current one), as text."""
    record = await ctx().runs.get(checked_run_id(run_id))
    attempt = query_int("attempt", record.current.number, 1, 10_000)
    if attempt > record.current.number:
        raise NotFound(f"run {run_id} has no attempt {attempt}")
    logs = await ctx().bus.read_object(f"{run_id}/{attempt}")
    return Response(logs or b"", content_type="text/plain; charset=utf-8")


@blueprint.put("/runs/<run_id>/logs")
@document_querystring(LogsQuery)
async def put_logs(run_id: str) -> Response:
    """A worker stores the captured stdout/stderr of an attempt (text, up to 10 MiB; replaces earlier uploads)."""
    record = await ctx().runs.get(checked_run_id(run_id))
    attempt = query_int("attempt", record.current.number, 1, record.current.number)
    logs = await request.get_data(cache=False, as_text=False)
    assert isinstance(logs, bytes)
    if len(logs) > MAX_LOG_BYTES:
        raise PayloadTooLarge("logs are larger than 10 MiB; the worker keeps only the first 10 MiB")
    await ctx().bus.write_object(f"{run_id}/{attempt}", logs)
    return Response(status=204)


@blueprint.post("/runs/<run_id>/cancel")
@document_response(OpRun)
async def cancel_run(run_id: str) -> Response:
    """Cancel: PENDING/ASSIGNED at once; RUNNING asks the worker; idempotent on CANCELLED; 409 when finished."""
    return json_response(run_view(await ctx().runs.cancel(checked_run_id(run_id))))


@blueprint.post("/runs/<run_id>/retry")
@document_response(OpRun)
async def retry_run(run_id: str) -> Response:
    """Start a new attempt of a FAILED or CANCELLED run."""
    return json_response(run_view(await ctx().runs.retry(checked_run_id(run_id))))


@blueprint.patch("/runs/<run_id>")
@document_request(PatchRunIn)
@document_response(OpRun)
async def patch_run(run_id: str) -> Response:
    """Change the priority of a PENDING or ASSIGNED run."""
    body = await read_body(PatchRunIn)
    return json_response(run_view(await ctx().runs.reprioritise(checked_run_id(run_id), body.priority)))


@blueprint.post("/runs/<run_id>/events")
@document_request(WorkerEventIn)
@document_response(OpRun)
async def post_event(run_id: str) -> Response:
    """A worker reports an event of (run, attempt); a stale attempt gets 409 STALE_ATTEMPT."""
    body = await read_body(WorkerEventIn)
    return json_response(run_view(await ctx().runs.apply_worker_event(checked_run_id(run_id), body)))
