"""/workers: heartbeats, claims (long poll), fleet status and drain."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

from pydantic import BaseModel
from quart import Blueprint, Response, request
from quart_schema import document_querystring, document_request, document_response

from gyoza.core.views import assignment, worker_view
from gyoza.errors import InvalidRequest, WorkerNotFound
from gyoza.schema import (
    WORKER_ID_PATTERN,
    AssignmentList,
    HeartbeatIn,
    HeartbeatReply,
    OpRun,
    WorkerList,
    WorkerView,
)
from gyoza.server.context import ctx
from gyoza.server.http import json_response, read_body, refusals

blueprint = Blueprint("workers", __name__)

MAX_CLAIM_WAIT_S = 60.0


class ClaimQuery(BaseModel):
    wait: float = 0


def _checked_worker_id(worker_id: str) -> str:
    if not re.fullmatch(WORKER_ID_PATTERN, worker_id):  # the id reaches NATS subjects and KV keys
        raise InvalidRequest(
            "invalid worker id", [{"field": "worker_id", "problem": f"must match {WORKER_ID_PATTERN}"}]
        )
    return worker_id


def _claim_wait() -> float:
    raw = request.args.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_CLAIM_WAIT_S:
        raise InvalidRequest(
            f"wait must be a number of seconds from 0 to {MAX_CLAIM_WAIT_S:g}",
            [{"field": "wait", "problem": f"expected 0 to {MAX_CLAIM_WAIT_S:g}"}],
        )
    return wait


@blueprint.post("/workers/<worker_id>/heartbeat")
@document_request(HeartbeatIn)
@document_response(HeartbeatReply)
@refusals(400, 413, 415)
async def heartbeat(worker_id: str) -> Response:
    """Register or refresh a worker; the reply carries commands (cancel these attempts)."""
    arrived = time.monotonic()  # liveness counts from here, however long the answer takes
    body = await read_body(HeartbeatIn)
    worker_id = _checked_worker_id(worker_id)
    context = ctx()
    if context.scheduler.is_leader:  # this server is the leader: answer here, without a NATS round trip to itself
        return json_response(await context.scheduler.heartbeat(worker_id, body, arrived))
    return json_response(await context.fleet.heartbeat(worker_id, body.model_dump_json().encode()))


@blueprint.post("/workers/<worker_id>/claim")
@document_querystring(ClaimQuery)
@document_response(AssignmentList)
@refusals(400)
async def claim(worker_id: str) -> Response:
    """The runs assigned to this worker and not yet started; waits up to ``wait`` seconds for one to arrive."""
    worker_id = _checked_worker_id(worker_id)
    context = ctx()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _claim_wait()
    while True:
        bodies = context.index.assigned_to(worker_id)
        remaining = deadline - loop.time()
        if bodies or remaining <= 0:
            break
        waiter = context.runs_listener.assignment_waiters.setdefault(worker_id, asyncio.Event())
        waiter.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), remaining)
    views = [OpRun.model_validate_json(body) for body in bodies]
    released = [await context.secrets.release(assignment(view), view.secrets) for view in views]
    return json_response(AssignmentList(data=released))


@blueprint.get("/workers")
@document_response(WorkerList)
async def list_workers() -> Response:
    """Every known worker: status, totals, reserved, free, per-GPU VRAM, the runs it holds."""
    return json_response(WorkerList(data=[worker_view(r, held) for r, held in ctx().index.workers()]))


@blueprint.get("/workers/<worker_id>")
@document_response(WorkerView)
@refusals(400, 404)
async def get_worker(worker_id: str) -> Response:
    found = ctx().index.workers(_checked_worker_id(worker_id))
    if not found:
        raise WorkerNotFound(f"no worker with id {worker_id!r}")
    record, held = found[0]
    return json_response(worker_view(record, held))


@blueprint.post("/workers/<worker_id>/drain")
@document_response(WorkerView)
@refusals(400, 404)
async def drain(worker_id: str) -> Response:
    """No new assignments for this worker; what runs there finishes."""
    record = await ctx().fleet.drain(_checked_worker_id(worker_id))
    return json_response(worker_view(record, ctx().index.reservations(record.id)))
