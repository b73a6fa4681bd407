"""Request parsing and response building shared by every route."""

from __future__ import annotations

import json
import re
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from quart import Response, request

from gyoza.errors import (
    DefinitionNotFound,
    InvalidJson,
    InvalidRequest,
    PayloadTooLarge,
    RunNotFound,
    UnsupportedMediaType,
)
from gyoza.schema import NAME_PATTERN, validation_problems

M = TypeVar("M", bound=BaseModel)

MAX_BODY_BYTES = 1024 * 1024
# Captured logs of one attempt (SPEC §6: bounded at 10 MiB per attempt) are the one larger body.
MAX_LOG_BYTES = 10 * 1024 * 1024
# Quart's own limit, above which it answers 413 before reading the body. That early answer closes the connection
# while the client is still sending, which the client sees as a reset instead of the 413; so bodies up to this
# size are read in full and refused by ``read_body``, and only absurd ones get the early answer.
READ_LIMIT_BYTES = 16 * MAX_BODY_BYTES
_RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NAME = re.compile(NAME_PATTERN)


async def read_body(model: type[M]) -> M:
    """Parse the JSON body into ``model``: 415 when it is not JSON, 400 listing every problem when invalid.

    An empty body counts as ``{}`` so that bodies made only of optional fields may be left out.
    """
    raw = await request.get_data(cache=False)
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge("request body is larger than 1 MiB")
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


def json_response(body: BaseModel | str | bytes, status: int = 200) -> Response:
    data = body.model_dump_json() if isinstance(body, BaseModel) else body
    return Response(data, status=status, content_type="application/json")


def list_response(items: list[str], **fields: object) -> Response:
    """``{"data": [...], ...}`` from already-serialised items, without parsing them again."""
    extra = "".join(f",{json.dumps(k)}:{json.dumps(v)}" for k, v in fields.items())
    return Response('{"data":[' + ",".join(items) + "]" + extra + "}", content_type="application/json")


def checked_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise RunNotFound(f"no run with id {run_id!r}")
    return run_id


def checked_name(name: str) -> str:
    if not _NAME.match(name):
        raise DefinitionNotFound(f"no definition named {name!r}")
    return name


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
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
