"""One readable line per pydantic validation error: ``<field path>: <what is wrong>``."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from gyoza.opfile.model import BuildSpec
from gyoza.schema import (
    Constraints,
    EventDelivery,
    InputSpec,
    OpDefinitionIn,
    OutputSpec,
    Retention,
    RetryPolicy,
)

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}

_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}

_PATTERNS = {
    "name": "must be lowercase letters, digits, '-' or '_', start with a letter or digit, at most 63 characters",
    "version": "must be letters, digits, '.', '_', '+' or '-', start with a letter or digit (e.g. 1.0.0)",
    "tags": "must be letters, digits, '_', '.', ':' or '-', start with a letter or digit",
    "env": "must be a valid environment variable name (letters, digits and '_', not starting with a digit)",
    "topic": "must be letters, digits, '_' or '-'",
}

# Hints for mistakes people make in YAML in particular.
_TYPE_HINTS = {
    ("version", "string_type"): 'quote it so YAML reads it as text, e.g. version: "1.0"',
    ("ram_mb", "int_type"): "megabytes as a number, e.g. ram_mb: 4096",
    ("vram_mb", "int_type"): "megabytes per GPU as a number, e.g. vram_mb: 16000",
    ("cpu", "float_type"): "cores as a number, e.g. cpu: 2 or cpu: 0.5",
}


def _known_fields(*models: type[BaseModel]) -> list[str]:
    return sorted({name for model in models for name in model.model_fields})


_FIELDS = [
    *_known_fields(
        OpDefinitionIn, InputSpec, OutputSpec, Constraints, RetryPolicy, EventDelivery, Retention, BuildSpec
    ),
    "build",
]


def field_path(loc: Sequence[int | str]) -> str:
    """``("input_specs", "top_k", "type")`` -> ``input_specs.top_k.type``; list indexes as ``command[0]``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def json_kind(value: Any) -> str:
    """A value as the user wrote it: ``string '4GB'``, ``number 1.0``, ``a list``."""
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if value is None:
        return "nothing (null)"
    return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else type(value).__name__


def describe_error(error: ErrorDetails, prefix: tuple[str, ...] = ()) -> str:
    loc = (*prefix, *error["loc"])
    is_key = bool(loc) and loc[-1] == "[key]"
    if is_key:
        loc = loc[:-1]
    field = next((part for part in reversed(loc) if isinstance(part, str)), "")
    return f"{field_path(loc)}: {_problem(error, field, is_key, loc)}"


def _problem(error: ErrorDetails, field: str, is_key: bool, loc: Sequence[int | str]) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(field, _FIELDS, n=1, cutoff=0.7)
        return "unknown field" + (f" (did you mean '{close[0]}'?)" if close else "")
    if kind == "enum":
        choices = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        what = "type" if field == "type" else "value"
        return f"unknown {what} {value!r} (expected one of {choices})"
    if kind == "string_pattern_mismatch":
        owner = str(loc[0]) if loc else field
        rule = _PATTERNS.get(field) or _PATTERNS.get(owner) or f"must match {ctx.get('pattern')}"
        return f"{'invalid name: ' if is_key else ''}{rule}, got {value!r}"
    if kind in _EXPECTED:
        hint = _TYPE_HINTS.get((field, kind))
        return f"expected {_EXPECTED[kind]}, got {json_kind(value)}" + (f" ({hint})" if hint else "")
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()), "")
        return f"must be {_BOUNDS[kind]} {bound:g}, got {value!r}" if isinstance(bound, int | float) else error["msg"]
    message = error["msg"]
    return message[:1].lower() + message[1:]
