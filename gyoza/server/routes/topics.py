"""/topics/{topic}/events: the topic feed, cursor = GYOZA_TOPICS stream sequence."""

from __future__ import annotations

import re

from pydantic import BaseModel
from quart import Blueprint, Response
from quart_schema import document_querystring, document_response

from gyoza.errors import InvalidRequest
from gyoza.schema import TOPIC_PATTERN, TopicEventList
from gyoza.server.context import ctx
from gyoza.server.http import json_response, query_int, refusals
from gyoza.services.topics import MAX_PAGE

blueprint = Blueprint("topics", __name__)


class TopicQuery(BaseModel):
    after: int = 0
    limit: int = 100


@blueprint.get("/topics/<topic>/events")
@document_querystring(TopicQuery)
@document_response(TopicEventList)
@refusals(400)
async def topic_events(topic: str) -> Response:
    """Events of every run delivering to ``topic`` after the cursor, in order; resume with ``next_cursor``."""
    if not re.fullmatch(TOPIC_PATTERN, topic):  # the topic is part of a NATS subject
        raise InvalidRequest("invalid topic name", [{"field": "topic", "problem": f"must match {TOPIC_PATTERN}"}])
    after = query_int("after", 0, 0, 2**63)
    limit = query_int("limit", 100, 1, MAX_PAGE)
    return json_response(await ctx().topics.read(topic, after, limit))
