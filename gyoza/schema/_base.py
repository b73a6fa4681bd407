"""The two model bases and the constrained string types every wire shape is built from."""

from __future__ import annotations

import functools
import typing
from typing import Annotated, Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic.config import ExtraValues

from gyoza.errors import RecordTooNew

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
TOPIC_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
WORKER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
# These patterns are checked by pydantic's Rust regex engine, where ``$`` is the end of the text. Python's ``re``
# lets ``$`` match before a trailing newline: check them there with ``re.fullmatch``, never ``re.match``.

OpName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Version = Annotated[str, StringConstraints(pattern=VERSION_PATTERN)]
Topic = Annotated[str, StringConstraints(pattern=TOPIC_PATTERN)]
Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
WorkerId = Annotated[str, StringConstraints(pattern=WORKER_ID_PATTERN)]
# No whitespace and no control character (NUL included): an image reference goes to Docker as it is.
Image = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^[^\s\x00-\x1f\x7f]+$")]
# Text that reaches a process (argv, environment) or a terminal: a NUL cannot be passed there and only truncates.
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
IdempotencyKey = Annotated[str, StringConstraints(pattern=IDEMPOTENCY_KEY_PATTERN)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
Priority = Annotated[int, Field(ge=0, le=100)]


def _no_additional_properties(schema: dict[str, Any]) -> None:
    schema["additionalProperties"] = False


def _unstated_additional_properties(schema: dict[str, Any]) -> None:
    schema.pop("additionalProperties", None)


class Input(BaseModel):
    """What users send: unknown fields refused, strict types, finite numbers (no NaN or infinity).

    Parsed with ``model_validate(_json)``, a body refuses unknown fields at every level, in the ``Part`` models it
    shares with records too (their own config keeps unknown fields, for the records' sake).
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @classmethod
    def model_validate(
        cls, obj: Any, *, strict: bool | None = None, extra: ExtraValues | None = None,
        from_attributes: bool | None = None, context: Any | None = None, by_alias: bool | None = None,
        by_name: bool | None = None,
    ) -> Self:  # fmt: skip
        return super().model_validate(
            obj, strict=strict, extra=extra or cls.model_config.get("extra"), from_attributes=from_attributes,
            context=context, by_alias=by_alias, by_name=by_name,
        )  # fmt: skip

    @classmethod
    def model_validate_json(
        cls, json_data: str | bytes | bytearray, *, strict: bool | None = None, extra: ExtraValues | None = None,
        context: Any | None = None, by_alias: bool | None = None, by_name: bool | None = None,
    ) -> Self:  # fmt: skip
        return super().model_validate_json(
            json_data, strict=strict, extra=extra or cls.model_config.get("extra"), context=context,
            by_alias=by_alias, by_name=by_name,
        )  # fmt: skip


class Part(BaseModel):
    """A piece both users send and Gyoza stores (constraints, retry policy, specs, resources).

    As strict as ``Input`` about types; unknown fields are refused inside an ``Input`` body and kept (and written
    back) inside a record, so an older server never strips what a newer one wrote.
    """

    model_config = ConfigDict(
        extra="allow", strict=True, allow_inf_nan=False, json_schema_extra=_no_additional_properties
    )


class Record(BaseModel):
    """What Gyoza stores, returns and sends between its processes: unknown fields are kept and written back, at
    every level, so a record makes the round trip through an older server unchanged. The API's views show only the
    fields this version knows (``known_fields``)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_unstated_additional_properties)


# The major version of the stored records' layout. Additive changes (new optional fields) keep it: older servers
# read such records and keep the fields they do not know. A change an older server would misread bumps it.
SCHEMA_VERSION = 1


class StoredRecord(Record):
    """A record kept in a KV bucket, stamped with the ``schema_version`` that wrote it.

    A record of a newer major version is refused on read with ``RecordTooNew`` (503), never read and rewritten by a
    server that would misread it.
    """

    schema_version: int = SCHEMA_VERSION

    @model_validator(mode="before")
    @classmethod
    def _readable_version(cls, data: Any) -> Any:
        version = data.get("schema_version") if isinstance(data, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            key = next((str(data[k]) for k in ("id", "name", "run_id", "holder") if k in data), None)
            what = cls.__name__ if key is None else f"{cls.__name__} {key}"
            raise RecordTooNew(
                f"{what} has schema version {version}, newer than the {SCHEMA_VERSION} this Gyoza reads; it is left "
                "untouched: upgrade this server (or finish the rolling upgrade)",
                details=[{"field": "schema_version", "problem": f"{version} > {SCHEMA_VERSION}"}],
            )
        return data


M = TypeVar("M", bound=BaseModel)


def known_fields(model: M) -> M:
    """``model`` without the fields this version does not know, at every level (for the API's views). The same object
    when it has none, so the common case costs one look at each nested model."""
    known: M = _known(model)
    return known


def _known(value: Any) -> Any:
    if isinstance(value, BaseModel):
        values = value.__dict__
        changed = {name: _known(values[name]) for name in _model_fields(type(value))}
        changed = {name: new for name, new in changed.items() if new is not values[name]}
        if not value.__pydantic_extra__ and not changed:
            return value
        fields = {name: values[name] for name in type(value).model_fields} | changed
        return type(value).model_construct(_fields_set=value.model_fields_set & fields.keys(), **fields)
    if isinstance(value, list):
        items = [_known(item) for item in value]
        return value if all(new is old for new, old in zip(items, value, strict=True)) else items
    if isinstance(value, dict):
        entries = {key: _known(item) for key, item in value.items()}
        return value if all(entries[key] is item for key, item in value.items()) else entries
    return value


@functools.cache
def _model_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` that can hold a model (the others hold plain JSON values: nothing to leave out)."""
    return tuple(name for name, field in model.model_fields.items() if _holds_models(field.annotation))


def _holds_models(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_models(arg) for arg in typing.get_args(annotation))


def validation_problems(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """pydantic's errors as the API's ``[{field, problem}]`` list, with dotted field paths."""
    problems = []
    for err in exc.errors():
        path = ".".join(str(part) for part in err["loc"])
        field = f"{prefix}.{path}" if prefix and path else (prefix or path or "body")
        problems.append({"field": field, "problem": err["msg"]})
    return problems
