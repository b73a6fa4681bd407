"""GET /queue: the pending runs in the order the scheduler places them, each with why it is still waiting."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from quart import Blueprint, Response
from quart_schema import document_querystring, document_response

from gyoza.schema import OpRun
from gyoza.server.context import ctx
from gyoza.server.http import list_response, query_int, refusals

blueprint = Blueprint("queue", __name__)

MAX_QUEUE_PAGE = 500


class QueueQuery(BaseModel):
    limit: int = 50


class Queue(BaseModel):
    """The first ``limit`` pending runs, highest priority first and oldest first within a priority."""

    object: Literal["list"] = "list"
    data: list[OpRun]
    has_more: bool
    total: int


@blueprint.get("/queue")
@document_querystring(QueueQuery)
@document_response(Queue)
@refusals(400)
async def queue() -> Response:
    """PENDING runs in scheduling order (priority desc, then oldest first) with their ``state_reason``; ``total``
    counts every pending run. Every run created before the request is listed, whichever server process created it."""
    limit = query_int("limit", 50, 1, MAX_QUEUE_PAGE)
    await ctx().runs_listener.catch_up()
    rows, has_more, total = ctx().index.pending_in_order(limit)
    return list_response(rows, object="list", has_more=has_more, total=total)
