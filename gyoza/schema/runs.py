"""Runs: API bodies, the stored record with its attempts and events, the API view, worker events, lists."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from gyoza.schema._base import (
    EnvName,
    IdempotencyKey,
    Image,
    Input,
    OpName,
    Priority,
    Record,
    StoredRecord,
    Tag,
    Text,
    Topic,
    Version,
    WorkerId,
)
from gyoza.schema.definitions import (
    Concurrency,
    Constraints,
    EventDelivery,
    OutputSpec,
    RetryPolicy,
    RunTemplate,
)
from gyoza.schema.enums import EventType, FailureReason, ReasonCode, RunState
from gyoza.schema.retention import Retention
from gyoza.schema.usage import AttemptUsage
from gyoza.schema.webhooks import Webhook, Webhooks

# Labels: a few key/value strings a user attaches to runs to find and act on them together (GET /runs?label=k:v,
# POST /runs/cancel). A key has no ":" so that ``k:v`` splits at its first one; a value is any short line of text.
LABEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$"
LABEL_VALUE_PATTERN = r"^[^\x00-\x1f\x7f]{0,256}$"
LABEL_FILTER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}:[^\x00-\x1f\x7f]{0,256}$"
MAX_LABELS = 32
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN)]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS, description="at most 32 key/value labels")]
LabelFilter = Annotated[str, StringConstraints(pattern=LABEL_FILTER_PATTERN)]


def _set_by_the_definition(value: Any) -> Any:
    raise PydanticCustomError(
        "set_by_definition", "is set by the definition and cannot change per run; deploy a new version to change it"
    )


# A field a run of a definition may not override: named in the 400, left out of the OpenAPI description.
SetByDefinition = SkipJsonSchema[Annotated[Any, AfterValidator(_set_by_the_definition)]]


class RunOverrides(Input):
    """What one run of a definition may change: where and how long it runs, how it is retried, extra env.

    ``constraints`` and ``retry_policy`` change only the fields given; ``env`` adds to (and wins over) the
    definition's; ``tags`` and ``timeout_seconds`` replace the definition's; ``webhooks`` add to the definition's.
    Image, command and specs are fixed.
    """

    constraints: Constraints | None = None
    retry_policy: RetryPolicy | None = None
    timeout_seconds: Annotated[float, Field(gt=0, le=30 * 86400)] | None = None
    tags: Annotated[list[Tag], Field(max_length=64)] | None = None
    env: dict[EnvName, Text] | None = None
    webhooks: Webhooks | None = None
    retention: Retention | None = None
    concurrency: Concurrency | None = None


class RunFromDefinitionIn(RunOverrides):
    """POST /definitions/{name}/runs."""

    inputs: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = 5
    version: Version | None = None
    idempotency_key: IdempotencyKey | None = None
    labels: Labels = Field(default_factory=dict)
    image: SetByDefinition = Field(None, exclude=True)
    command: SetByDefinition = Field(None, exclude=True)
    input_specs: SetByDefinition = Field(None, exclude=True)
    output_specs: SetByDefinition = Field(None, exclude=True)
    event_delivery: SetByDefinition = Field(None, exclude=True)
    secrets: SetByDefinition = Field(None, exclude=True)
    max_concurrent: SetByDefinition = Field(None, exclude=True)
    keep_warm_seconds: SetByDefinition = Field(None, exclude=True)
    max_instances: SetByDefinition = Field(None, exclude=True)


def _only_in_definitions(value: Any) -> Any:
    raise PydanticCustomError(
        "secrets_need_a_definition",
        "secrets are given by definitions only (an admin deploys one that names them); an ad hoc run has none",
    )


def _limits_a_definition(value: Any) -> Any:
    raise PydanticCustomError(
        "max_concurrent_needs_a_definition",
        "max_concurrent limits the runs of a definition; limit ad hoc runs together with concurrency: {key, limit}",
    )


def _warms_a_definition(value: Any) -> Any:
    raise PydanticCustomError(
        "warm_instances_need_a_definition",
        "warm instances serve the runs of one definition version; deploy the op as a definition to keep it warm",
    )


WarmsADefinition = SkipJsonSchema[Annotated[Any, AfterValidator(_warms_a_definition)]]


class AdHocRunIn(RunTemplate):
    """POST /runs."""

    secrets: SkipJsonSchema[Annotated[Any, AfterValidator(_only_in_definitions)]] = Field(None, exclude=True)
    max_concurrent: SkipJsonSchema[Annotated[Any, AfterValidator(_limits_a_definition)]] = Field(None, exclude=True)
    keep_warm_seconds: WarmsADefinition = Field(None, exclude=True)
    max_instances: WarmsADefinition = Field(None, exclude=True)

    inputs: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = 5
    idempotency_key: IdempotencyKey | None = None
    labels: Labels = Field(default_factory=dict)


class PatchRunIn(Input):
    priority: Priority


class StateReason(Record):
    code: ReasonCode
    message: str = ""


class Event(Record):
    id: int
    attempt: int
    type: EventType
    t: datetime
    msg: str | int = ""
    payload: dict[str, Any] = Field(default_factory=dict)
    state: RunState


class ExecutionSummary(Record):
    duration_ms: int | None = None
    worker_id: str | None = None
    exit_code: int | None = None
    error_message: str | None = None
    gpu_ids: list[int] = Field(default_factory=list)


class Attempt(Record):
    """One execution (or retry) of a run."""

    number: int
    state: RunState
    state_reason: StateReason
    worker_id: str | None = None
    gpu_ids: list[int] = Field(default_factory=list)
    progress: int = 0
    outputs: dict[str, Any] = Field(default_factory=dict)
    exit_code: int | None = None
    error: str | None = None
    cancel_requested: bool = False
    not_before: datetime | None = None
    created_at: datetime
    assigned_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    usage: AttemptUsage | None = None  # what it used, as its worker measured


class RunRecord(StoredRecord):
    """KV ``gyoza_runs/<run_id>``: the single source of truth for a run, changed only by compare-and-set."""

    id: str
    op_definition: str | None = None
    definition_version: str | None = None
    image: str
    command: list[str] | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    priority: int = 5
    constraints: Constraints = Field(default_factory=Constraints)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_seconds: float | None = None
    tags: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    output_specs: dict[str, OutputSpec] | None = None
    event_delivery: EventDelivery | None = None
    webhooks: list[Webhook] = Field(default_factory=list)
    retention: Retention = Field(default_factory=Retention)
    secrets: dict[str, str] = Field(default_factory=dict)  # env name -> secret name (never a value)
    max_concurrent: int | None = None  # its definition's
    keep_warm_seconds: float | None = None  # its definition's (warm instances)
    max_instances: int | None = None
    owner: str | None = None  # the id of the scoped key that created it (None: the bootstrap key, a session)
    concurrency: Concurrency | None = None
    # When JetStream removes the run (its finishing write's TTL); None while unfinished or kept forever.
    expires_at: datetime | None = None
    idempotency_key: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    # The batch request that created the run (POST .../runs/batch), None for a run created alone.
    batch_id: str | None = None
    created_at: datetime
    updated_at: datetime
    attempts: list[Attempt]
    events: list[Event] = Field(default_factory=list)
    next_event_id: int = 1

    @property
    def current(self) -> Attempt:
        return self.attempts[-1]

    @property
    def state(self) -> RunState:
        return self.current.state


class OpRun(Record):
    """A run as the API shows it: the run's fields plus its current attempt's state and timeline."""

    id: str
    object: Literal["run"] = "run"
    op_definition: str | None
    definition_version: str | None
    image: str
    command: list[str] | None
    inputs: dict[str, Any]
    priority: int
    constraints: Constraints
    retry_policy: RetryPolicy
    timeout_seconds: float | None
    tags: list[str]
    env: dict[str, str]
    output_specs: dict[str, OutputSpec] | None
    event_delivery: EventDelivery | None
    webhooks: list[Webhook] = Field(default_factory=list)
    retention: Retention = Field(default_factory=Retention)
    expires_at: datetime | None = None
    secrets: dict[str, str] = Field(default_factory=dict)
    max_concurrent: int | None = None
    concurrency: Concurrency | None = None
    keep_warm_seconds: float | None = None
    max_instances: int | None = None
    owner: str | None = None
    usage: AttemptUsage | None = None  # the current attempt's, once it ended (issue 13.3)
    state: RunState
    state_reason: StateReason
    progress: int
    current_attempt: int
    cancel_requested: bool
    outputs: dict[str, Any]
    events: list[Event]
    worker_id: str | None
    gpu_ids: list[int]
    execution_summary: ExecutionSummary | None
    idempotency_key: str | None
    labels: dict[str, str] = Field(default_factory=dict)
    batch_id: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class AttemptView(Attempt):
    """GET /runs/{id}/attempts: an attempt with its own timeline."""

    events: list[Event] = Field(default_factory=list)


# UNASSIGNED: the worker gives back an attempt it has not started (it is shutting down).
WorkerEventType = Literal["STARTED", "PROGRESS", "INFO", "COMPLETED", "FAILED", "CANCELLED", "UNASSIGNED"]


class WorkerEventIn(Input):
    """POST /runs/{id}/events."""

    attempt: Annotated[int, Field(ge=1)]
    # The reporting worker; only the one holding the attempt may write it. An attempt that went back to the queue
    # and on to another worker keeps its number, so the worker id is what fences off the first worker's reports.
    worker_id: WorkerId
    type: WorkerEventType
    msg: Annotated[str, Field(max_length=10_000)] | int = ""
    payload: dict[str, Any] = Field(default_factory=dict)


class FailurePayload(Input):
    """The payload of a worker's FAILED event."""

    model_config = ConfigDict(extra="ignore", strict=True)

    reason: Annotated[FailureReason, Field(strict=False)] = FailureReason.EXIT_CODE
    exit_code: int | None = None
    error: Annotated[str, Field(max_length=100_000)] | None = None
    usage: AttemptUsage | None = None


class CompletedPayload(Input):
    model_config = ConfigDict(extra="ignore", strict=True)

    outputs: dict[str, Any] = Field(default_factory=dict)
    exit_code: int | None = None
    usage: AttemptUsage | None = None


class RunList(Record):
    object: Literal["list"] = "list"
    data: list[OpRun]
    has_more: bool


class AttemptList(Record):
    data: list[AttemptView]


class EventList(Record):
    data: list[Event]


class RunRequested(Record):
    """Published on ``gyoza.runs.requested`` whenever a run (re)enters PENDING or changes priority."""

    run_id: str
    attempt: int
    priority: int


class IdempotencyEntry(StoredRecord):
    """KV ``gyoza_idempotency/<sha256 of the key>``: the run a key created (the bucket expires it after 24 h)."""

    run_id: str


class RunListQuery(Input):
    """GET /runs query string (parsed from strings by the route, then validated here).

    Field names are Python's; the query keys are the aliases (``created[gte]``), which the OpenAPI description shows.
    """

    model_config = ConfigDict(extra="forbid", strict=False, validate_by_name=True, validate_by_alias=True)

    limit: Annotated[int, Field(ge=1, le=100)] = 10
    starting_after: str | None = None
    ending_before: str | None = None
    state: list[RunState] | None = None
    op_definition: OpName | None = None
    image: Image | None = None
    topic: Topic | None = None
    worker_id: WorkerId | None = None
    batch_id: Annotated[str | None, Field(description="runs of this batch")] = None
    label: Annotated[
        list[LabelFilter] | None, Field(description="key:value; repeat for several (a run must have them all)")
    ] = None
    created_gte: Annotated[
        float | None, Field(alias="created[gte]", description="created at or after, unix seconds")
    ] = None
    created_gt: Annotated[float | None, Field(alias="created[gt]", description="created after, unix seconds")] = None
    created_lte: Annotated[
        float | None, Field(alias="created[lte]", description="created at or before, unix seconds")
    ] = None
    created_lt: Annotated[float | None, Field(alias="created[lt]", description="created before, unix seconds")] = None

    def to_params(self) -> dict[str, str | int | float | list[str]]:
        """The query string the server reads back into this model (``created_gte`` -> ``created[gte]``)."""
        params: dict[str, str | int | float | list[str]] = self.model_dump(by_alias=True, exclude_none=True)
        if self.state is not None:
            params["state"] = ",".join(state.value for state in self.state)
        return params
