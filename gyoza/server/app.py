"""The Quart application: auth, error mapping, OpenAPI, routes, and the start/stop of NATS and the index."""

from __future__ import annotations

import contextlib
import hmac

from quart import Quart, request
from quart.sessions import NullSession, SecureCookieSessionInterface
from quart.wrappers import BaseRequestWebsocket
from quart_schema import QuartSchema
from werkzeug.exceptions import RequestEntityTooLarge

import gyoza
from gyoza.errors import Unauthorized
from gyoza.server.context import ServerContext, build_context
from gyoza.server.errors import register_error_handlers
from gyoza.server.http import READ_LIMIT_BYTES
from gyoza.server.metrics import install_metrics
from gyoza.server.routes import definitions, meta, runs, topics, workers
from gyoza.settings import Settings

# Readable without a key: liveness, and the API description (a docs page cannot send a header).
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/docs"})


class NoSessions(SecureCookieSessionInterface):
    """Gyoza keeps no sessions. Quart would build a fresh empty one per request (a measurable share of a small
    request's cost); every request shares one instead. A NullSession refuses writes, so sharing it is safe."""

    _shared = NullSession()

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> NullSession:
        return self._shared

    async def make_null_session(self, app: Quart) -> NullSession:
        return self._shared


def create_app(settings: Settings) -> Quart:
    if not settings.api_key:
        raise ValueError("an API key is required (GYOZA_API_KEY or --api-key)")
    app = Quart("gyoza")
    app.session_interface = NoSessions()
    app.config["MAX_CONTENT_LENGTH"] = READ_LIMIT_BYTES
    QuartSchema(
        app,
        info={"title": "Gyoza", "version": gyoza.__version__},
        security_schemes={"apiKey": {"type": "apiKey", "in_": "header", "name": "X-API-Key"}},
        security=[{"apiKey": []}],
        redoc_ui_path=None,
        scalar_ui_path=None,
    )
    register_error_handlers(app)
    install_metrics(app)
    _register_body_receipt(app)
    _register_auth(app, settings.api_key)
    for blueprint in (meta.blueprint, definitions.blueprint, runs.blueprint, topics.blueprint, workers.blueprint):
        app.register_blueprint(blueprint)

    @app.before_serving
    async def start() -> None:
        app.extensions["gyoza"] = await build_context(settings)

    @app.after_serving
    async def stop() -> None:
        context: ServerContext | None = app.extensions.pop("gyoza", None)
        if context is not None:
            await context.close()

    return app


def _register_body_receipt(app: Quart) -> None:
    @app.before_request
    async def receive_whole_body() -> None:
        """Receive the request body before any answer, even an early one (401, 404).

        Hypercorn silently closes a keep-alive connection when the response goes out before the request body was
        received, so the client's next request on that connection fails. Bodies over READ_LIMIT_BYTES are the
        exception: they get Quart's early 413.
        """
        if request.content_length or "chunked" in request.headers.get("Transfer-Encoding", ""):
            with contextlib.suppress(RequestEntityTooLarge):
                await request.get_data(cache=True)


def _register_auth(app: Quart, api_key: str) -> None:
    expected = api_key.encode()

    @app.before_request
    async def check_api_key() -> None:
        if request.path in PUBLIC_PATHS:
            return
        given = request.headers.get("X-API-Key", "").encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("missing or wrong X-API-Key header")
