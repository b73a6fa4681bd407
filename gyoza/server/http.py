"""Request parsing and response building shared by every route."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

from hypercorn.typing import HTTPScope
from pydantic import BaseModel, ValidationError
from quart import Response, current_app, request
from quart_schema import document_response
from quart_schema.openapi import QUART_SCHEMA_HIDDEN_ATTRIBUTE
from quart_schema.validation import QUART_SCHEMA_QUERYSTRING_ATTRIBUTE

from gyoza.errors import (
    DefinitionNotFound,
    InvalidJson,
    InvalidRequest,
    PayloadTooLarge,
    RunNotFound,
    UnsupportedMediaType,
)
from gyoza.schema import NAME_PATTERN, ErrorBody, validation_problems
from gyoza.server.bodies import SCOPE_KEY, BodyGuard

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., object])

MIB = 1024 * 1024
MAX_BODY_BYTES = MIB
# Captured logs of one attempt (SPEC §6: bounded at 10 MiB per attempt) are the one larger body.
MAX_LOG_BYTES = 10 * MIB
_LOG_UPLOAD_PATH = re.compile(r"/runs/[^/]+/logs")
# A batch holds up to 1,000 run bodies (gyoza.schema.MAX_BATCH_RUNS): 8 MiB leaves about 8 KiB per run at 1,000
# (inputs are small in practice; bigger data travels by reference), and well under what is drained rather than cut
# off (gyoza.server.bodies), so an oversized batch still gets its 413.
MAX_BATCH_BYTES = 8 * MIB
_BATCH_PATH = re.compile(r"(/definitions/[^/]+)?/runs/batch")
_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NAME = re.compile(NAME_PATTERN)
_INTEGER = re.compile(r"-?[0-9]{1,20}")


def body_limit(scope: HTTPScope) -> int:
    """The largest body a route takes, applied while the body streams in (gyoza.server.bodies)."""
    log_upload = scope["method"] == "PUT" and _LOG_UPLOAD_PATH.fullmatch(scope["path"])
    if log_upload:
        return MAX_LOG_BYTES
    batch = scope["method"] == "POST" and _BATCH_PATH.fullmatch(scope["path"])
    return MAX_BATCH_BYTES if batch else MAX_BODY_BYTES


def _guard() -> BodyGuard:
    guard: BodyGuard = cast(dict[str, Any], request.scope)[SCOPE_KEY]
    return guard


def _too_large(guard: BodyGuard) -> PayloadTooLarge:
    what = "logs are" if guard.limit == MAX_LOG_BYTES else "request body is"
    return PayloadTooLarge(f"{what} larger than {guard.limit // MIB} MiB")


async def refuse_oversized_body() -> None:
    """A body whose Content-Length is over the route's limit is refused before it is read."""
    guard = _guard()
    if guard.too_large:
        raise _too_large(guard)


async def refuse_unknown_query_parameters() -> None:
    """A documented operation takes exactly the query parameters its OpenAPI description lists; a typo is a 400."""
    if not request.args or request.url_rule is None:
        return
    view = current_app.view_functions[request.url_rule.endpoint]
    if getattr(view, QUART_SCHEMA_HIDDEN_ATTRIBUTE, False):
        return
    model: type[BaseModel] | None = getattr(view, QUART_SCHEMA_QUERYSTRING_ATTRIBUTE, None)
    known = set() if model is None else {info.alias or name for name, info in model.model_fields.items()}
    unknown = [key for key in request.args if key not in known]
    if unknown:
        raise InvalidRequest(
            f"unknown query parameter {unknown[0]!r}", [{"field": k, "problem": "unknown parameter"} for k in unknown]
        )


async def body_bytes() -> bytes:
    """The whole request body; 413 when it is over the route's limit (it was dropped while it streamed in)."""
    raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    guard = _guard()
    if guard.too_large:
        raise _too_large(guard)
    return raw


async def read_body(model: type[M]) -> M:
    """Parse the JSON body into ``model``: 415 when it is not JSON, 400 listing every problem when invalid.

    An empty body counts as ``{}`` so that bodies made only of optional fields may be left out.
    """
    raw = await body_bytes()
    if not raw.strip():
        raw = b"{}"
    elif request.mimetype != "application/json":
        raise UnsupportedMediaType("send the body as JSON with Content-Type: application/json")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if errors and errors[0]["type"] == "json_invalid":
            raise InvalidJson(f"body is not valid JSON: {errors[0]['ctx'].get('error', '')}") from None
        raise InvalidRequest("invalid request body", details=validation_problems(exc)) from None


def refusals(*statuses: int) -> Callable[[F], F]:
    """Document an operation's own error answers, each with the uniform error body (400 for the query and 401 for
    the key are added to every operation by ``gyoza.server.openapi``)."""

    def decorate(func: F) -> F:
        for status in statuses:
            func = document_response(ErrorBody, status)(func)
        return func

    return decorate


def json_response(body: BaseModel | str | bytes, status: int = 200) -> Response:
    data = body.model_dump_json() if isinstance(body, BaseModel) else body
    return Response(data, status=status, content_type="application/json")


def list_response(items: list[str], **fields: object) -> Response:
    """``{"data": [...], ...}`` from already-serialised items, without parsing them again."""
    extra = "".join(f",{json.dumps(k)}:{json.dumps(v)}" for k, v in fields.items())
    return Response('{"data":[' + ",".join(items) + "]" + extra + "}", content_type="application/json")


# Ids reach NATS subjects and KV keys: the whole id must match (``re.match`` with ``$`` lets "id\n" through).
def checked_run_id(run_id: str) -> str:
    if not _RUN_ID.fullmatch(run_id):
        raise RunNotFound(f"no run with id {run_id!r}")
    return run_id


def checked_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise DefinitionNotFound(f"no definition named {name!r}")
    return name


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    # Plain decimal digits only: int() would also take " 5", "1_000" and other scripts' digits.
    value = int(raw) if _INTEGER.fullmatch(raw) else low - 1
    if not low <= value <= high:
        raise InvalidRequest(
            f"{name} must be an integer from {low} to {high}",
            [{"field": name, "problem": f"expected an integer from {low} to {high}"}],
        )
    return value


def query_bool(name: str) -> bool:
    raw = request.args.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidRequest(f"{name} must be true or false", [{"field": name, "problem": "expected true or false"}])
    return raw in ("true", "1")
