"""The Quart application: auth, error mapping, OpenAPI, routes, and the start/stop of NATS and the index."""

from __future__ import annotations

from collections.abc import Callable

from quart import Quart, Response, request
from quart.sessions import NullSession, SecureCookieSessionInterface
from quart.wrappers import BaseRequestWebsocket
from quart_schema import QuartSchema

import gyoza
from gyoza.server.access import Authenticator, check_role, check_worker_in_body
from gyoza.server.bodies import BoundedBodies, RequestScope
from gyoza.server.context import ServerContext, build_context
from gyoza.server.errors import register_error_handlers
from gyoza.server.http import MAX_LOG_BYTES, body_limit, refuse_oversized_body, refuse_unknown_query_parameters
from gyoza.server.metrics import install_metrics
from gyoza.server.openapi import GyozaOpenAPIProvider
from gyoza.server.routes import (
    batches,
    definitions,
    docs,
    keys,
    meta,
    queue,
    runs,
    secrets,
    streams,
    topics,
    ui,
    webhooks,
    workers,
)  # fmt: skip
from gyoza.server.ui.secret import load_secret
from gyoza.server.ui.sessions import Sessions
from gyoza.services.keys import KeyRing
from gyoza.settings import Settings

# Readable without a key: liveness, the API description with its page and the page's assets (a browser
# cannot send a header), and the dashboard's sign-in page (which takes the key).
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", docs.DOCS_PATH, ui.SIGN_IN_PATH})
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
    # The dashboard's sessions, signed with a secret every process of a pool reads from the shared data dir.
    sessions = app.extensions[ui.SESSIONS] = Sessions(load_secret(settings.data_dir), settings.api_key)
    # Scoped keys (docs/keys.md): the ring is filled by the context's watch of the keys bucket once serving.
    ring = KeyRing()
    authenticator = Authenticator(settings.api_key, ring, sessions)
    has_key = _key_check(authenticator)
    # Quart's way to put ASGI middleware between the server and the app.
    app.asgi_app = BoundedBodies(app.asgi_app, has_key, body_limit)  # type: ignore[method-assign]
    _register_request_checks(app, has_key, authenticator, sessions)
    blueprints = (meta, docs, ui, definitions, runs, batches, queue, streams, webhooks, topics, workers, keys, secrets)
    for blueprint in (module.blueprint for module in blueprints):
        app.register_blueprint(blueprint)

    @app.before_serving
    async def start() -> None:
        app.extensions["gyoza"] = await build_context(settings, ring)

    @app.after_serving
    async def stop() -> None:
        context: ServerContext | None = app.extensions.pop("gyoza", None)
        if context is not None:
            await context.close()

    return app


def _key_check(authenticator: Authenticator) -> Callable[[RequestScope], bool]:
    """Whether a request (its ASGI scope) may proceed: a public path, or a key or dashboard session that
    ``authenticator`` knows (its role is checked once the route is known)."""

    def has_key(scope: RequestScope) -> bool:
        path: str = scope["path"]
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return True
        return authenticator.principal(scope) is not None

    return has_key


def _register_request_checks(
    app: Quart, has_key: Callable[[RequestScope], bool], authenticator: Authenticator, sessions: Sessions
) -> None:
    """In this order, before any route runs: the key and its role, then the body's size, then the query's parameter
    names, then (for a worker key) the worker its body names."""

    @app.before_request
    async def check_api_key() -> Response | None:
        if has_key(request.scope):
            principal = authenticator.principal(request.scope)
            if principal is not None:  # None: a public path
                check_role(principal)
            return None
        if ui.is_page(request.scope):  # a browser without a session is sent to sign in, not shown a JSON 401
            return ui.sign_in_redirect(request.full_path)
        raise sessions.refusal(request.scope)

    app.before_request(refuse_oversized_body)
    app.before_request(refuse_unknown_query_parameters)
    app.before_request(check_worker_in_body)
