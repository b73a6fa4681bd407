"""GET /health."""

from __future__ import annotations

import os

from quart import Blueprint, Response, current_app
from quart_schema import document_response, security_scheme

import gyoza
from gyoza.schema import Health, NatsHealth
from gyoza.server.context import NATS_MODE_CONFIG, ctx
from gyoza.server.http import json_response

blueprint = Blueprint("meta", __name__)


@blueprint.get("/health")
@security_scheme([])  # keyless: load balancers and healthchecks call it without the key
@document_response(Health, 200)
@document_response(Health, 503)
async def health() -> Response:
    """200 while this server can serve; 503 naming what is down (for load balancers and the compose healthcheck).

    No NATS round trip per call: the connection state is read locally and the JetStream check is cached.
    """
    context = ctx()
    state = await context.bus.state()
    mode = current_app.config.get(NATS_MODE_CONFIG, context.bus.mode)  # a pool's parent runs the embedded NATS
    nats = NatsHealth(
        mode="embedded" if mode == "embedded" else "external",
        connected=state.connected,
        jetstream=state.jetstream,
        reconnects=state.reconnects,
    )
    body = Health(
        status="ok" if state.ok else "unavailable",
        version=gyoza.__version__,
        nats=nats,
        scheduler="leader" if context.scheduler.is_leader else "standby",
        pid=os.getpid(),
    )
    return json_response(body, 200 if state.ok else 503)
