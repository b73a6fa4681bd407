"""The two model bases and the constrained string types every wire shape is built from."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

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


class Input(BaseModel):
    """What users send: unknown fields refused, strict types, finite numbers (no NaN or infinity)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Record(BaseModel):
    """What Gyoza stores and returns: unknown fields ignored, so older code reads newer records."""

    model_config = ConfigDict(extra="ignore")


def validation_problems(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """pydantic's errors as the API's ``[{field, problem}]`` list, with dotted field paths."""
    problems = []
    for err in exc.errors():
        path = ".".join(str(part) for part in err["loc"])
        field = f"{prefix}.{path}" if prefix and path else (prefix or path or "body")
        problems.append({"field": field, "problem": err["msg"]})
    return problems
