"""The Quart application: auth, error mapping, OpenAPI, routes, and the start/stop of NATS and the index."""

from __future__ import annotations

import hmac

from quart import Quart, request
from quart_schema import QuartSchema

import gyoza
from gyoza.bus.connection import open_bus
from gyoza.errors import Unauthorized
from gyoza.server.context import ServerContext
from gyoza.server.errors import register_error_handlers
from gyoza.server.http import MAX_BODY_BYTES
from gyoza.server.index import QueryIndex
from gyoza.server.routes import definitions, meta, runs, topics
from gyoza.server.watch import IndexFeeder
from gyoza.services.definitions import DefinitionService
from gyoza.services.runs import RunService
from gyoza.services.topics import TopicFeed
from gyoza.settings import Settings

# Readable without a key: liveness, and the API description (a docs page cannot send a header).
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/docs"})


def create_app(settings: Settings) -> Quart:
    if not settings.api_key:
        raise ValueError("an API key is required (GYOZA_API_KEY or --api-key)")
    app = Quart("gyoza")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    QuartSchema(
        app,
        info={"title": "Gyoza", "version": gyoza.__version__},
        security_schemes={"apiKey": {"type": "apiKey", "in_": "header", "name": "X-API-Key"}},
        security=[{"apiKey": []}],
        redoc_ui_path=None,
        scalar_ui_path=None,
    )
    register_error_handlers(app)
    _register_auth(app, settings.api_key)
    for blueprint in (meta.blueprint, definitions.blueprint, runs.blueprint, topics.blueprint):
        app.register_blueprint(blueprint)

    @app.before_serving
    async def start() -> None:
        app.extensions["gyoza"] = await build_context(settings)

    @app.after_serving
    async def stop() -> None:
        context: ServerContext | None = app.extensions.pop("gyoza", None)
        if context is not None:
            await context.feeder.stop()
            await context.bus.close()
            context.index.close()

    return app


def _register_auth(app: Quart, api_key: str) -> None:
    expected = api_key.encode()

    @app.before_request
    async def check_api_key() -> None:
        if request.path in PUBLIC_PATHS:
            return
        given = request.headers.get("X-API-Key", "").encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("missing or wrong X-API-Key header")


async def build_context(settings: Settings) -> ServerContext:
    bus = await open_bus(settings)
    try:
        index = QueryIndex(settings.data_dir / "index" / f"server-{settings.port}.sqlite")
        definition_service = DefinitionService(bus, observer=index)
        run_service = RunService(bus, definition_service, observer=index)
        topic_feed = TopicFeed(bus, run_service)
        feeder = IndexFeeder(bus, index, topic_feed)
        await feeder.start()
    except BaseException:
        await bus.close()
        raise
    return ServerContext(settings, bus, index, definition_service, run_service, topic_feed, feeder)
