"""The one place where errors become HTTP responses: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import json
import logging

from quart import Quart, Response, request
from werkzeug import exceptions as werkzeug_exceptions
from werkzeug.exceptions import HTTPException

from gyoza.errors import (
    GyozaError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)

# Errors Quart raises itself (routing, body size), as Gyoza errors with a sentence a user can act on.
_HTTP_ERRORS: dict[int, GyozaError] = {
    404: NotFound("no such endpoint"),
    405: MethodNotAllowed("method not allowed on this endpoint"),
    413: PayloadTooLarge("request body is larger than 1 MiB"),
    415: UnsupportedMediaType("send the body as JSON with Content-Type: application/json"),
}


# A 503 is "try again shortly" (NATS reconnecting, no stream or scheduler leader for a moment): say when.
RETRY_AFTER_S = 1


def error_response(error: GyozaError) -> Response:
    response = Response(json.dumps(error.to_body()), status=error.status, content_type="application/json")
    if error.status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def register_error_handlers(app: Quart) -> None:
    @app.errorhandler(GyozaError)
    async def gyoza_error(error: GyozaError) -> Response:
        if error.status >= 500:
            log.warning("%s %s: %s: %s", request.method, request.path, error.code, error.message)
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        known = _HTTP_ERRORS.get(status)
        if known is not None:
            response = error_response(known)
            if isinstance(error, werkzeug_exceptions.MethodNotAllowed) and error.valid_methods:
                response.headers["Allow"] = ", ".join(sorted(error.valid_methods))  # RFC 9110: a 405 says which
            return response
        if status < 500:
            return error_response(InvalidRequest(error.description or error.name))
        return error_response(GyozaError(error.description or error.name))

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.exception("unhandled error", exc_info=error)
        return error_response(GyozaError("internal error; see the server log"))
