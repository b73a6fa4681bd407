"""The public surface, pinned: what ``gyoza.client`` and ``gyoza.op`` export, and every error's code and HTTP status.

Changing any of these changes what users' code and scripts rely on: a failure here means update the docs (and the
changelog) along with this snapshot, on purpose.
"""

from __future__ import annotations

import gyoza.client
import gyoza.errors
import gyoza.op
from gyoza.errors import GyozaError

ERROR_TABLE = {
    "GyozaError": ("INTERNAL", 500),
    "InvalidRequest": ("INVALID_REQUEST", 400),
    "InvalidJson": ("INVALID_JSON", 400),
    "InvalidInputs": ("INVALID_INPUTS", 400),
    "Unauthorized": ("UNAUTHORIZED", 401),
    "CsrfTokenInvalid": ("CSRF_TOKEN_INVALID", 403),
    "Forbidden": ("FORBIDDEN", 403),
    "NotFound": ("NOT_FOUND", 404),
    "RunNotFound": ("RUN_NOT_FOUND", 404),
    "DefinitionNotFound": ("DEFINITION_NOT_FOUND", 404),
    "WorkerNotFound": ("WORKER_NOT_FOUND", 404),
    "KeyNotFound": ("KEY_NOT_FOUND", 404),
    "SecretNotFound": ("SECRET_NOT_FOUND", 404),
    "RegistryNotFound": ("REGISTRY_NOT_FOUND", 404),
    "MethodNotAllowed": ("METHOD_NOT_ALLOWED", 405),
    "Conflict": ("CONFLICT", 409),
    "InvalidTransition": ("INVALID_TRANSITION", 409),
    "StaleAttempt": ("STALE_ATTEMPT", 409),
    "VersionConflict": ("VERSION_CONFLICT", 409),
    "PayloadTooLarge": ("PAYLOAD_TOO_LARGE", 413),
    "UnsupportedMediaType": ("UNSUPPORTED_MEDIA_TYPE", 415),
    "Unavailable": ("UNAVAILABLE", 503),
    "RecordTooNew": ("RECORD_TOO_NEW", 503),
    "BadResponse": ("BAD_RESPONSE", 502),
}


def _error_classes() -> list[type[GyozaError]]:
    found: list[type[GyozaError]] = [GyozaError]
    todo = [GyozaError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


def test_client_exports() -> None:
    assert gyoza.client.__all__ == ["AsyncGyozaClient", "GyozaClient", "gyoza_client"]
    for name in gyoza.client.__all__:
        assert getattr(gyoza.client, name) is not None


def test_op_sdk_exports() -> None:
    expected = ["Context", "InputError", "OutputError", "context", "info", "op", "progress", "run", "run_attempt"]
    assert gyoza.op.__all__ == expected
    for name in gyoza.op.__all__:
        assert getattr(gyoza.op, name) is not None


def test_error_code_table() -> None:
    classes = _error_classes()
    assert {cls.__name__: (cls.code, cls.status) for cls in classes} == ERROR_TABLE
    assert len({cls.code for cls in classes}) == len(classes), "every error has its own code"
    assert all(getattr(gyoza.errors, cls.__name__) is cls for cls in classes), "every error lives in gyoza.errors"


def test_every_code_comes_back_as_its_class() -> None:
    for cls in _error_classes():
        body = {"error": {"code": cls.code, "message": "m", "details": [{"field": "f", "problem": "p"}]}}
        error = gyoza.errors.error_from_body(cls.status, body)
        assert type(error) is cls and (error.message, error.details) == ("m", [{"field": "f", "problem": "p"}])
