"""The one exception tree of Gyoza.

Every error that can reach a user carries a stable ``code`` (SNAKE_CASE, part of the API) and the HTTP ``status``
the server answers with. The server turns any ``GyozaError`` into the uniform error body in exactly one place
(``gyoza.server.errors``); the client SDK turns error bodies back into these classes.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GyozaError(Exception):
    """Base of every Gyoza error. Unexpected failures surface as this class (500 INTERNAL)."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidRequest(GyozaError):
    """The request is malformed or breaks a rule; ``details`` lists every problem as {field, problem}."""

    status = 400
    code = "INVALID_REQUEST"


class InvalidJson(InvalidRequest):
    """The body is not valid JSON."""

    code = "INVALID_JSON"


class InvalidInputs(InvalidRequest):
    """A run's inputs break the definition's input specs; ``details`` lists every problem."""

    code = "INVALID_INPUTS"


class Unauthorized(GyozaError):
    """The X-API-Key header (or the dashboard session cookie) is missing or wrong."""

    status = 401
    code = "UNAUTHORIZED"


class CsrfTokenInvalid(GyozaError):
    """A dashboard session (cookie) sent a state-changing request without the session's X-CSRF-Token header."""

    status = 403
    code = "CSRF_TOKEN_INVALID"


class Forbidden(GyozaError):
    """The API key is right but its role (or scope) does not allow this request; the message names the role needed."""

    status = 403
    code = "FORBIDDEN"


class NotFound(GyozaError):
    """The path or the resource does not exist."""

    status = 404
    code = "NOT_FOUND"


class RunNotFound(NotFound):
    code = "RUN_NOT_FOUND"


class DefinitionNotFound(NotFound):
    code = "DEFINITION_NOT_FOUND"


class WorkerNotFound(NotFound):
    code = "WORKER_NOT_FOUND"


class KeyNotFound(NotFound):
    code = "KEY_NOT_FOUND"


class SecretNotFound(NotFound):
    code = "SECRET_NOT_FOUND"


class RegistryNotFound(NotFound):
    code = "REGISTRY_NOT_FOUND"


class MethodNotAllowed(GyozaError):
    status = 405
    code = "METHOD_NOT_ALLOWED"


class Conflict(GyozaError):
    """The request conflicts with the stored state."""

    status = 409
    code = "CONFLICT"


class InvalidTransition(Conflict):
    """The run's state machine refuses this change; the message names both states."""

    code = "INVALID_TRANSITION"


class StaleAttempt(Conflict):
    """A worker wrote for an attempt that is no longer the run's current one; it must stop that container."""

    code = "STALE_ATTEMPT"


class VersionConflict(Conflict):
    """A stored (name, version) is immutable; the posted content differs from it."""

    code = "VERSION_CONFLICT"


class PayloadTooLarge(GyozaError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(GyozaError):
    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class Unavailable(GyozaError):
    """A dependency (NATS JetStream) did not answer in time; nothing was acknowledged."""

    status = 503
    code = "UNAVAILABLE"


class RecordTooNew(GyozaError):
    """A stored record has a newer major ``schema_version`` than this server reads: it is refused, never rewritten.

    A 503 like ``Unavailable`` (clients and workers retry, and may reach an upgraded replica), with its own code so
    an operator sees that this server is older than the data: finish the upgrade.
    """

    status = 503
    code = "RECORD_TOO_NEW"


class BadResponse(GyozaError):
    """Client side: the server answered 2xx with a body this client cannot read (not JSON, or not the expected
    shape), or the answer could not be decoded. Never sent by a server; 502 as a gateway says of a bad upstream."""

    status = 502
    code = "BAD_RESPONSE"


def _all_subclasses(cls: type[GyozaError]) -> list[type[GyozaError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def error_from_body(status: int, body: Any) -> GyozaError:
    """Rebuild the error a server answered with (client side), keeping its code, message and details."""
    info = body.get("error", {}) if isinstance(body, dict) else {}
    code = str(info.get("code", "")) if isinstance(info, dict) else ""
    message = str(info.get("message", "")) if isinstance(info, dict) else ""
    details = info.get("details", []) if isinstance(info, dict) else []
    by_code = {cls.code: cls for cls in _all_subclasses(GyozaError)}
    kind = by_code.get(code)
    if kind is None:
        by_status = {cls.status: cls for cls in reversed(_all_subclasses(GyozaError)) if cls.code != "INTERNAL"}
        kind = by_status.get(status, GyozaError)
    error = kind(message or f"HTTP {status}", details=details if isinstance(details, list) else [])
    return error
