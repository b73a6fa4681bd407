"""Op definitions: specs, constraints, retry policy, and how versions are stored (SPEC §2.1, §2.4)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from gyoza.errors import InvalidRequest
from gyoza.schema._base import (
    EnvName,
    Image,
    Input,
    OpName,
    Part,
    Record,
    StoredRecord,
    Tag,
    Text,
    Topic,
    Version,
    known_fields,
)
from gyoza.schema.enums import FailureReason, ValueType
from gyoza.schema.retention import Retention
from gyoza.schema.secrets import SecretName
from gyoza.schema.webhooks import Webhook, Webhooks


class InputSpec(Part):
    type: ValueType
    required: bool = True
    default: Any = None
    description: str = ""
    choices: list[Any] | None = None
    min: float | None = None
    max: float | None = None


class OutputSpec(Part):
    type: ValueType
    required: bool = True
    description: str = ""


class Constraints(Part):
    cpu: Annotated[float, Field(ge=0, le=4096)] = 0.0
    ram_mb: Annotated[int, Field(ge=0, le=1 << 30)] = 0
    vram_mb: Annotated[int, Field(ge=0, le=1 << 30)] = 0
    gpus: Annotated[int, Field(ge=0, le=64)] | None = None

    @model_validator(mode="after")
    def _default_gpus(self) -> Constraints:
        # SPEC §2.1: a VRAM request implies one GPU unless the count is given. Filled in without marking the field
        # as given, so a partial override (``{"vram_mb": ...}``) leaves the definition's GPU count alone.
        if self.gpus is None:
            self.__dict__["gpus"] = 1 if self.vram_mb > 0 else 0
        return self


class RetryPolicy(Part):
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 1
    backoff_seconds: Annotated[float, Field(ge=0, le=86400)] = 0.0
    backoff_multiplier: Annotated[float, Field(ge=1, le=100)] = 2.0
    max_backoff_seconds: Annotated[float, Field(ge=0, le=86400)] = 300.0
    retry_on: list[FailureReason] = Field(default_factory=list)
    # A retry after OOM_KILLED asks for this many times the RAM, after GPU_OOM this many times the VRAM (None: the
    # same again). Only a retry the policy makes anyway: list the reason in ``retry_on``.
    grow_on_oom: Annotated[float, Field(gt=1, le=8)] | None = None


class EventDelivery(Part):
    topic: Topic
    attributes: dict[str, Any] = Field(default_factory=dict)


# A concurrency key: a name runs share to be limited together (a customer, a licence, a rate-limited API).
CONCURRENCY_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"
MAX_CONCURRENCY = 100_000
MAX_KEEP_WARM_S = 7 * 86400


class Concurrency(Part):
    """At most ``limit`` runs with this ``key`` ASSIGNED or RUNNING at once (each run's own limit applies to it)."""

    key: Annotated[str, StringConstraints(pattern=CONCURRENCY_KEY_PATTERN)]
    limit: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)]


class RunTemplate(Input):
    """The fields a run copies from its definition (or gets directly when ad hoc)."""

    image: Image
    command: Annotated[list[Text], Field(max_length=256)] | None = None
    constraints: Constraints = Field(default_factory=Constraints)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_seconds: Annotated[float, Field(gt=0, le=30 * 86400)] | None = None
    tags: Annotated[list[Tag], Field(max_length=64)] = Field(default_factory=list)
    env: dict[EnvName, Text] = Field(default_factory=dict)
    output_specs: dict[str, OutputSpec] | None = None
    event_delivery: EventDelivery | None = None
    webhooks: Webhooks = Field(default_factory=list)
    retention: Retention = Field(default_factory=Retention)
    # Environment variables whose values are secrets (``PUT /secrets/{name}``), by secret name: only the name is in
    # the definition and its runs; the value reaches the worker an attempt is assigned to, nothing else.
    secrets: Annotated[dict[EnvName, SecretName], Field(max_length=64)] = Field(default_factory=dict)
    # At most this many runs of the definition (every version) ASSIGNED or RUNNING at once.
    max_concurrent: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)] | None = None
    concurrency: Concurrency | None = None
    # Warm instances (docs/ops.md): after an attempt the op's container stays up this long to serve the next run of
    # this version at once (its setup() ran already). At most ``max_instances`` runs of the definition at once, each
    # in an instance of its own.
    keep_warm_seconds: Annotated[float, Field(ge=0, le=MAX_KEEP_WARM_S)] | None = None
    max_instances: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)] | None = None


class OpDefinitionIn(RunTemplate):
    """POST /definitions."""

    name: OpName
    version: Version
    description: Annotated[str, Field(max_length=10_000)] = ""
    input_specs: dict[str, InputSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _secrets_apart_from_env(self) -> OpDefinitionIn:
        both = sorted(set(self.secrets) & set(self.env))
        if both:
            problems = [{"field": f"secrets.{name}", "problem": "also set in env: give it one value"} for name in both]
            raise InvalidRequest(f"{', '.join(both)}: both in env and in secrets", problems)
        return self


class OpDefinition(StoredRecord):
    """A stored definition version. ``id`` repeats ``name`` for clients that expect one."""

    id: str
    name: str
    version: str
    image: str
    command: list[str] | None = None
    description: str = ""
    input_specs: dict[str, InputSpec] = Field(default_factory=dict)
    output_specs: dict[str, OutputSpec] | None = None
    constraints: Constraints = Field(default_factory=Constraints)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_seconds: float | None = None
    tags: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    event_delivery: EventDelivery | None = None
    webhooks: list[Webhook] = Field(default_factory=list)
    retention: Retention = Field(default_factory=Retention)
    secrets: dict[str, str] = Field(default_factory=dict)
    max_concurrent: int | None = None
    concurrency: Concurrency | None = None
    keep_warm_seconds: float | None = None
    max_instances: int | None = None
    created_at: datetime

    def content(self) -> dict[str, Any]:
        """What makes two posts of a version identical: every field this version knows but the server-set ones.
        (Not the webhooks' secrets, which no answer shows: ``gyoza deploy`` compares with an answer.)"""
        return known_fields(self).model_dump(mode="json", exclude={"id", "created_at", "schema_version"})


class DefinitionVersionRef(Record):
    version: str
    created_at: datetime
    revision: int = 0


class DefinitionPointer(StoredRecord):
    """KV ``gyoza_definitions/<name>``: the deployed versions of a name, oldest first; the last one is latest."""

    name: str
    versions: list[DefinitionVersionRef] = Field(default_factory=list)

    @property
    def latest(self) -> DefinitionVersionRef | None:
        return self.versions[-1] if self.versions else None


class DefinitionList(Record):
    data: list[OpDefinition]
