"""The Quart application: auth, error mapping, OpenAPI, routes, and the start/stop of NATS and the index."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from quart import Quart, request
from quart.sessions import NullSession, SecureCookieSessionInterface
from quart.wrappers import BaseRequestWebsocket
from quart_schema import QuartSchema

import gyoza
from gyoza.errors import Unauthorized
from gyoza.server.bodies import BoundedBodies, RequestScope
from gyoza.server.context import ServerContext, build_context
from gyoza.server.errors import register_error_handlers
from gyoza.server.http import MAX_LOG_BYTES, body_limit, refuse_oversized_body, refuse_unknown_query_parameters
from gyoza.server.metrics import install_metrics
from gyoza.server.openapi import GyozaOpenAPIProvider
from gyoza.server.routes import batches, definitions, docs, meta, runs, topics, workers
from gyoza.settings import Settings

# Readable without a key: liveness, and the API description with its page and the page's assets (a browser
# cannot send a header).
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", docs.DOCS_PATH})
PUBLIC_PREFIXES = (docs.DOCS_ASSETS_PATH + "/",)


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
    # The largest body any route takes; BoundedBodies applies each route's own limit before Quart sees a byte.
    app.config["MAX_CONTENT_LENGTH"] = MAX_LOG_BYTES
    QuartSchema(
        app,
        info={"title": "Gyoza", "version": gyoza.__version__},
        security_schemes={"apiKey": {"type": "apiKey", "in_": "header", "name": "X-API-Key"}},
        security=[{"apiKey": []}],
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,  # routes/docs.py serves the page, with assets from the wheel rather than a CDN
        openapi_provider_class=GyozaOpenAPIProvider,
    )
    register_error_handlers(app)
    install_metrics(app)
    has_key = _key_check(settings.api_key)
    # Quart's way to put ASGI middleware between the server and the app.
    app.asgi_app = BoundedBodies(app.asgi_app, has_key, body_limit)  # type: ignore[method-assign]
    _register_request_checks(app, has_key)
    blueprints = (meta, docs, definitions, runs, batches, topics, workers)
    for blueprint in (module.blueprint for module in blueprints):
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


def _key_check(api_key: str) -> Callable[[RequestScope], bool]:
    """Whether a request (its ASGI scope) may proceed: a public path, or the right X-API-Key (constant time)."""
    expected = api_key.encode()

    def has_key(scope: RequestScope) -> bool:
        path: str = scope["path"]
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return True
        given = b"".join(value for name, value in scope["headers"] if name == b"x-api-key")
        return hmac.compare_digest(given, expected)

    return has_key


def _register_request_checks(app: Quart, has_key: Callable[[RequestScope], bool]) -> None:
    """In this order, before any route runs: the key, then the body's size, then the query's parameter names."""

    @app.before_request
    async def check_api_key() -> None:
        if not has_key(request.scope):
            raise Unauthorized("missing or wrong X-API-Key header")

    app.before_request(refuse_oversized_body)
    app.before_request(refuse_unknown_query_parameters)
