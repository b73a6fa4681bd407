"""/runs: ad hoc runs, listing, reading, cancel, retry, reprioritise, delete, worker events and logs."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from quart import Blueprint, Response, request
from quart_schema import document_querystring, document_request, document_response

from gyoza.core.views import attempt_views, run_view
from gyoza.errors import InvalidRequest, NotFound
from gyoza.schema import (
    WORKER_ID_PATTERN,
    AdHocRunIn,
    AttemptList,
    EventList,
    NoContent,
    OpRun,
    PatchRunIn,
    PlainText,
    RunList,
    RunListQuery,
    RunState,
    WorkerEventIn,
    known_fields,
    validation_problems,
)
from gyoza.server.access import request_owner
from gyoza.server.context import ctx
from gyoza.server.http import body_bytes, checked_run_id, json_response, list_response, query_int, read_body, refusals
from gyoza.server.sse import CreateRunQuery, create_wait
from gyoza.services.livestreams import until_terminal
from gyoza.services.removal import RunRemoval

blueprint = Blueprint("runs", __name__)

_STATE_PROBLEM = f"expected one of {', '.join(s.value for s in RunState)}"


class ListRunsQuery(RunListQuery):
    """What GET /runs documents: RunListQuery plus ``status``, the alias of ``state`` that the route folds in."""

    state: list[RunState] | None = Field(None, description="one state, or several as state=A,B")
    status: list[RunState] | None = Field(None, description="an alias of state")


class EventsQuery(BaseModel):
    after: int = 0


class LogsQuery(BaseModel):
    attempt: int | None = None


class LogsUploadQuery(BaseModel):
    attempt: int | None = None
    worker_id: str = Field(pattern=WORKER_ID_PATTERN, description="the worker holding the attempt")


@blueprint.post("/runs")
@document_querystring(CreateRunQuery)
@document_request(AdHocRunIn)
@document_response(OpRun, 201)
@document_response(OpRun, 200)
@refusals(400, 413, 415)
async def create_adhoc_run() -> Response:
    """Create an ad hoc run from an image (no definition); with ``?wait=``, answer once it ended (or the wait did)."""
    wait = create_wait()
    body = await read_body(AdHocRunIn)
    record, created = await ctx().runs.create_adhoc(body, request.headers.get("Idempotency-Key"), request_owner())
    record = await until_terminal(ctx().runs, ctx().stream_hub, record, wait)
    return json_response(run_view(record), 201 if created else 200)


@blueprint.get("/runs")
@document_querystring(ListRunsQuery)
@document_response(RunList)
@refusals(400)
async def list_runs() -> Response:
    """Runs, newest first, with filters and Stripe-style cursors; every run created before the request is listed,
    whichever server process created it."""
    query = parse_list_query(request.args)
    await ctx().runs_listener.catch_up()
    rows, has_more = ctx().index.list_runs(query)
    return list_response(rows, object="list", has_more=has_more)


def parse_list_query(args: Any) -> RunListQuery:
    """Query string -> RunListQuery: ``status`` as an alias of ``state``, ``A,B`` lists, ``created[gte]`` keys.

    Unknown keys were refused before (``refuse_unknown_query_parameters``).
    """
    values: dict[str, Any] = {key: args[key] for key in args if key not in ("state", "status", "label")}
    if "label" in args:
        values["label"] = args.getlist("label")  # repeatable: a run must carry every label given
    states = [s for key in ("state", "status") for raw in args.getlist(key) for s in raw.split(",")]
    if "" in states:
        raise InvalidRequest("state needs a value", [{"field": "state", "problem": _STATE_PROBLEM}])
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
    problems = validation_problems(exc)
    for problem in problems:
        head = problem["field"].split(".")[0]
        problem["field"] = head
        if head == "state":
            problem["problem"] = _STATE_PROBLEM
    return problems


@blueprint.get("/runs/<run_id>")
@document_response(OpRun)
@refusals(404)
async def get_run(run_id: str) -> Response:
    """A run with its current attempt's events."""
    record = await ctx().runs.get(checked_run_id(run_id))
    return json_response(run_view(record))


@blueprint.get("/runs/<run_id>/attempts")
@document_response(AttemptList)
@refusals(404)
async def list_attempts(run_id: str) -> Response:
    """Every attempt of a run, with its own events, outputs and error."""
    record = await ctx().runs.get(checked_run_id(run_id))
    return json_response(AttemptList(data=attempt_views(record)))


@blueprint.get("/runs/<run_id>/events")
@document_querystring(EventsQuery)
@document_response(EventList)
@refusals(400, 404)
async def list_events(run_id: str) -> Response:
    """The run's events (all attempts) with id greater than ``after``, in order."""
    after = query_int("after", 0, 0, 2**53)
    record = await ctx().runs.get(checked_run_id(run_id))
    return json_response(known_fields(EventList(data=[e for e in record.events if e.id > after])))


@blueprint.get("/runs/<run_id>/logs")
@document_querystring(LogsQuery)
@document_response(PlainText)
@refusals(400, 404)
async def get_logs(run_id: str) -> Response:
    """The captured stdout/stderr of an attempt (default: the current one), as text."""
    record = await ctx().runs.get(checked_run_id(run_id))
    attempt = query_int("attempt", record.current.number, 1, 10_000)
    if attempt > record.current.number:
        raise NotFound(f"run {run_id} has no attempt {attempt}")
    logs = await ctx().bus.read_object(f"{run_id}/{attempt}")
    return Response(logs or b"", content_type="text/plain; charset=utf-8")


@blueprint.put("/runs/<run_id>/logs")
@document_querystring(LogsUploadQuery)
@document_response(NoContent, 204)
@refusals(400, 404, 409, 413)
async def put_logs(run_id: str) -> Response:
    """The worker holding an attempt stores its captured stdout/stderr (text, up to 10 MiB; replaces earlier uploads).

    Like its events, only the worker holding the current attempt may write them: anyone else gets 409 STALE_ATTEMPT.
    """
    run_id = checked_run_id(run_id)
    attempt = query_int("attempt", 0, 1, 10_000) if "attempt" in request.args else None
    worker_id = request.args.get("worker_id", "")
    if not re.fullmatch(WORKER_ID_PATTERN, worker_id):
        raise InvalidRequest(
            "worker_id must name the worker holding the attempt: only it uploads the attempt's logs",
            [{"field": "worker_id", "problem": f"required, must match {WORKER_ID_PATTERN}"}],
        )
    attempt = await ctx().runs.check_log_writer(run_id, attempt, worker_id)
    await ctx().bus.write_object(f"{run_id}/{attempt}", await body_bytes())
    return Response(status=204)


@blueprint.post("/runs/<run_id>/cancel")
@document_response(OpRun)
@refusals(404, 409)
async def cancel_run(run_id: str) -> Response:
    """Cancel: PENDING/ASSIGNED at once; RUNNING asks the worker; idempotent on CANCELLED; 409 when finished."""
    return json_response(run_view(await ctx().runs.cancel(checked_run_id(run_id))))


@blueprint.post("/runs/<run_id>/retry")
@document_response(OpRun)
@refusals(404, 409)
async def retry_run(run_id: str) -> Response:
    """Start a new attempt of a FAILED or CANCELLED run."""
    return json_response(run_view(await ctx().runs.retry(checked_run_id(run_id))))


@blueprint.patch("/runs/<run_id>")
@document_request(PatchRunIn)
@document_response(OpRun)
@refusals(400, 404, 409, 413, 415)
async def patch_run(run_id: str) -> Response:
    """Change the priority of a PENDING or ASSIGNED run."""
    body = await read_body(PatchRunIn)
    return json_response(run_view(await ctx().runs.reprioritise(checked_run_id(run_id), body.priority)))


@blueprint.delete("/runs/<run_id>")
@document_response(NoContent, 204)
@refusals(404, 409)
async def delete_run(run_id: str) -> Response:
    """Delete a finished run with its logs (admin); 409 INVALID_TRANSITION while it is not finished: cancel it first.

    Its idempotency key is released: sent again, it creates a new run."""
    await RunRemoval(ctx().runs).delete(checked_run_id(run_id))
    return Response(status=204)


@blueprint.post("/runs/<run_id>/events")
@document_request(WorkerEventIn)
@document_response(OpRun)
@refusals(400, 404, 409, 413, 415)
async def post_event(run_id: str) -> Response:
    """The worker holding (run, attempt) reports an event of it.

    409 STALE_ATTEMPT when the attempt is not current or another worker (or none) holds it; 409 INVALID_TRANSITION
    when the run's state does not allow the event.
    """
    run_id = checked_run_id(run_id)
    body = await read_body(WorkerEventIn)
    return json_response(run_view(await ctx().runs.apply_worker_event(run_id, body)))
