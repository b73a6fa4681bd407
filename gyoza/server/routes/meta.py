"""GET /health."""

from __future__ import annotations

from quart import Blueprint, Response, current_app
from quart_schema import document_response

import gyoza
from gyoza.schema import Health
from gyoza.server.http import json_response

blueprint = Blueprint("meta", __name__)


@blueprint.get("/health")
@document_response(Health)
async def health() -> Response:
    context = current_app.extensions.get("gyoza")
    mode = context.bus.mode if context else "external"
    return json_response(Health(version=gyoza.__version__, nats=mode))
