"""Every wire shape of Gyoza, in one place: API bodies, responses, KV records and bus messages.

Two model bases:
- ``Input``: what users send. Unknown fields are refused and types are strict (``true`` is not an int, ``"5"`` is
  not a number), so a typo never silently changes meaning.
- ``Record``: what Gyoza stores and returns. Unknown fields are ignored, so an older server can read a record a newer
  one wrote.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
TOPIC_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"

OpName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Version = Annotated[str, StringConstraints(pattern=VERSION_PATTERN)]
Topic = Annotated[str, StringConstraints(pattern=TOPIC_PATTERN)]
Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
Image = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^\S+$")]
IdempotencyKey = Annotated[str, StringConstraints(pattern=IDEMPOTENCY_KEY_PATTERN)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
Priority = Annotated[int, Field(ge=0, le=100)]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- enums -------------------------------------------------------------------------------------------------------


class RunState(StrEnum):
    PENDING = "PENDING"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL_STATES = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED})


class EventType(StrEnum):
    CREATED = "CREATED"
    ASSIGNED = "ASSIGNED"
    UNASSIGNED = "UNASSIGNED"
    STARTED = "STARTED"
    INFO = "INFO"
    PROGRESS = "PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    RETRIED = "RETRIED"
    ERROR = "ERROR"


class ReasonCode(StrEnum):
    """Why a run is in its state (SPEC §2.5)."""

    QUEUED = "QUEUED"
    NO_WORKERS = "NO_WORKERS"
    NO_WORKER_WITH_TAGS = "NO_WORKER_WITH_TAGS"
    INSUFFICIENT_RESOURCES = "INSUFFICIENT_RESOURCES"
    NO_WORKER_LARGE_ENOUGH = "NO_WORKER_LARGE_ENOUGH"
    RETRY_BACKOFF = "RETRY_BACKOFF"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    EXIT_CODE = "EXIT_CODE"
    OOM_KILLED = "OOM_KILLED"
    TIMEOUT = "TIMEOUT"
    WORKER_LOST = "WORKER_LOST"
    OUTPUT_INVALID = "OUTPUT_INVALID"
    OUTPUT_MISSING = "OUTPUT_MISSING"
    IMAGE_NOT_FOUND = "IMAGE_NOT_FOUND"
    CONTAINER_ERROR = "CONTAINER_ERROR"
    USER = "USER"


class FailureReason(StrEnum):
    """The reason codes a FAILED attempt can carry; ``retry_on`` lists some of them."""

    EXIT_CODE = "EXIT_CODE"
    OOM_KILLED = "OOM_KILLED"
    TIMEOUT = "TIMEOUT"
    WORKER_LOST = "WORKER_LOST"
    OUTPUT_INVALID = "OUTPUT_INVALID"
    OUTPUT_MISSING = "OUTPUT_MISSING"
    IMAGE_NOT_FOUND = "IMAGE_NOT_FOUND"
    CONTAINER_ERROR = "CONTAINER_ERROR"


class ValueType(StrEnum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    OBJECT = "object"
    ARRAY = "array"
    ANY = "any"


# --- definitions -------------------------------------------------------------------------------------------------


class InputSpec(Input):
    type: ValueType
    required: bool = True
    default: Any = None
    description: str = ""
    choices: list[Any] | None = None
    min: float | None = None
    max: float | None = None


class OutputSpec(Input):
    type: ValueType
    required: bool = True
    description: str = ""


class Constraints(Input):
    cpu: Annotated[float, Field(ge=0, le=4096)] = 0.0
    ram_mb: Annotated[int, Field(ge=0, le=1 << 30)] = 0
    vram_mb: Annotated[int, Field(ge=0, le=1 << 30)] = 0
    gpus: Annotated[int, Field(ge=0, le=64)] | None = None

    @model_validator(mode="after")
    def _default_gpus(self) -> Constraints:
        # SPEC §2.1: a VRAM request implies one GPU unless the count is given.
        if self.gpus is None:
            self.gpus = 1 if self.vram_mb > 0 else 0
        return self


class RetryPolicy(Input):
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 1
    backoff_seconds: Annotated[float, Field(ge=0, le=86400)] = 0.0
    backoff_multiplier: Annotated[float, Field(ge=1, le=100)] = 2.0
    max_backoff_seconds: Annotated[float, Field(ge=0, le=86400)] = 300.0
    retry_on: list[FailureReason] = Field(default_factory=list)


class EventDelivery(Input):
    topic: Topic
    attributes: dict[str, Any] = Field(default_factory=dict)


class RunTemplate(Input):
    """The fields a run copies from its definition (or gets directly when ad hoc)."""

    image: Image
    command: Annotated[list[str], Field(max_length=256)] | None = None
    constraints: Constraints = Field(default_factory=Constraints)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_seconds: Annotated[float, Field(gt=0, le=30 * 86400)] | None = None
    tags: Annotated[list[Tag], Field(max_length=64)] = Field(default_factory=list)
    env: dict[EnvName, str] = Field(default_factory=dict)
    output_specs: dict[str, OutputSpec] | None = None
    event_delivery: EventDelivery | None = None


class OpDefinitionIn(RunTemplate):
    """POST /definitions."""

    name: OpName
    version: Version
    description: Annotated[str, Field(max_length=10_000)] = ""
    input_specs: dict[str, InputSpec] = Field(default_factory=dict)


class OpDefinition(Record):
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
    created_at: datetime

    def content(self) -> dict[str, Any]:
        """What makes two posts of a version identical: everything but server-set fields."""
        return self.model_dump(mode="json", exclude={"id", "created_at"})


class DefinitionVersionRef(Record):
    version: str
    created_at: datetime
    revision: int = 0


class DefinitionPointer(Record):
    """KV ``gyoza_definitions/<name>``: the deployed versions of a name, oldest first; the last one is latest."""

    name: str
    versions: list[DefinitionVersionRef] = Field(default_factory=list)

    @property
    def latest(self) -> DefinitionVersionRef | None:
        return self.versions[-1] if self.versions else None


# --- runs --------------------------------------------------------------------------------------------------------


class RunFromDefinitionIn(Input):
    """POST /definitions/{name}/runs."""

    inputs: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = 5
    version: Version | None = None
    idempotency_key: IdempotencyKey | None = None


class AdHocRunIn(RunTemplate):
    """POST /runs."""

    inputs: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = 5
    idempotency_key: IdempotencyKey | None = None


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


class RunRecord(Record):
    """KV ``gyoza_runs/<run_id>``: the single source of truth for a run, changed only by compare-and-set."""

    schema_version: int = 1
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
    idempotency_key: str | None = None
    created_at: datetime
    updated_at: datetime
    attempts: list[Attempt]
    events: list[Event] = Field(default_factory=list)
    next_event_id: int = 1
    # Highest event id already published to the topic feed (the outbox mark, see services/topics.py).
    topic_published_through: int = 0

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
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class AttemptView(Attempt):
    """GET /runs/{id}/attempts: an attempt with its own timeline."""

    events: list[Event] = Field(default_factory=list)


# --- worker-originated events ------------------------------------------------------------------------------------


# UNASSIGNED: the worker gives back an attempt it has not started (it is shutting down).
WorkerEventType = Literal["STARTED", "PROGRESS", "INFO", "COMPLETED", "FAILED", "CANCELLED", "UNASSIGNED"]


class WorkerEventIn(Input):
    """POST /runs/{id}/events."""

    attempt: Annotated[int, Field(ge=1)]
    # The reporting worker. An attempt that went back to the queue and on to another worker keeps its number, so
    # the worker id is what fences off the first worker's late reports.
    worker_id: str | None = None
    type: WorkerEventType
    msg: Annotated[str, Field(max_length=10_000)] | int = ""
    payload: dict[str, Any] = Field(default_factory=dict)


class FailurePayload(Input):
    """The payload of a worker's FAILED event."""

    model_config = ConfigDict(extra="ignore", strict=True)

    reason: Annotated[FailureReason, Field(strict=False)] = FailureReason.EXIT_CODE
    exit_code: int | None = None
    error: Annotated[str, Field(max_length=100_000)] | None = None


class CompletedPayload(Input):
    model_config = ConfigDict(extra="ignore", strict=True)

    outputs: dict[str, Any] = Field(default_factory=dict)
    exit_code: int | None = None


# --- workers and scheduling --------------------------------------------------------------------------------------

WORKER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
WorkerId = Annotated[str, StringConstraints(pattern=WORKER_ID_PATTERN)]


class WorkerStatus(StrEnum):
    ONLINE = "ONLINE"
    DRAINING = "DRAINING"
    OFFLINE = "OFFLINE"


class GpuInfo(Input):
    index: Annotated[int, Field(ge=0, le=1023)]
    uuid: Annotated[str, Field(max_length=128)] = ""
    name: Annotated[str, Field(max_length=128)] = ""
    vram_mb: Annotated[int, Field(ge=0, le=1 << 30)]


class WorkerResources(Input):
    cpu: Annotated[float, Field(ge=0, le=100_000)]
    ram_mb: Annotated[int, Field(ge=0, le=1 << 40)]
    gpus: Annotated[list[GpuInfo], Field(max_length=256)] = Field(default_factory=list)


class HeldAttempt(Input):
    run_id: str
    attempt: Annotated[int, Field(ge=1)]


class HeartbeatIn(Input):
    """POST /workers/{id}/heartbeat and NATS ``gyoza.workers.<id>.heartbeat``."""

    resources: WorkerResources
    tags: Annotated[list[Tag], Field(max_length=64)] = Field(default_factory=list)
    running: Annotated[list[HeldAttempt], Field(max_length=10_000)] = Field(default_factory=list)
    version: Annotated[str, Field(max_length=64)] = ""


class WorkerCommand(Record):
    type: Literal["cancel"]
    run_id: str
    attempt: int


class HeartbeatReply(Record):
    commands: list[WorkerCommand] = Field(default_factory=list)
    heartbeat_interval_s: float


class WorkerRecord(Record):
    """KV ``gyoza_workers/<worker_id>``, written only by the scheduler leader."""

    id: str
    status: WorkerStatus
    resources: WorkerResources
    tags: list[str] = Field(default_factory=list)
    version: str = ""
    registered_at: datetime
    last_heartbeat: datetime
    draining: bool = False


class GpuView(Record):
    index: int
    uuid: str
    name: str
    vram_mb: int
    reserved_vram_mb: int
    free_vram_mb: int


class ResourceAmounts(Record):
    cpu: float
    ram_mb: int
    vram_mb: int


class WorkerRunRef(Record):
    run_id: str
    attempt: int
    state: RunState


class WorkerView(Record):
    """GET /workers/{id}."""

    id: str
    object: Literal["worker"] = "worker"
    status: WorkerStatus
    tags: list[str]
    version: str
    totals: ResourceAmounts
    reserved: ResourceAmounts
    free: ResourceAmounts
    gpus: list[GpuView]
    running: list[WorkerRunRef]
    registered_at: datetime
    last_heartbeat: datetime


class WorkerList(Record):
    data: list[WorkerView]


class Assignment(Record):
    """What a worker needs to run an attempt: served by claim and published on ``gyoza.workers.<id>.assignments``."""

    type: Literal["assign"] = "assign"
    run_id: str
    attempt: int
    image: str
    command: list[str] | None
    inputs: dict[str, Any]
    env: dict[str, str]
    constraints: Constraints
    gpu_ids: list[int]
    timeout_seconds: float | None
    op_definition: str | None
    definition_version: str | None
    output_specs: dict[str, OutputSpec] | None


class AssignmentList(Record):
    data: list[Assignment]


class LeaderLease(Record):
    """KV ``gyoza_leases/scheduler``: which server replica runs the scheduler, until when."""

    holder: str
    expires_at: datetime


class DrainRequest(Record):
    worker_id: str


# --- lists, topics, bus messages ---------------------------------------------------------------------------------


class RunList(Record):
    object: Literal["list"] = "list"
    data: list[OpRun]
    has_more: bool


class DefinitionList(Record):
    data: list[OpDefinition]


class AttemptList(Record):
    data: list[AttemptView]


class EventList(Record):
    data: list[Event]


class TopicEvent(Record):
    """One message of the GYOZA_TOPICS stream; ``cursor`` is its stream sequence (set when read)."""

    cursor: int = 0
    run_id: str
    attempt: int
    type: EventType
    t: datetime
    msg: str | int
    payload: dict[str, Any]
    state: RunState
    attributes: dict[str, Any] = Field(default_factory=dict)


class TopicEventList(Record):
    data: list[TopicEvent]
    next_cursor: int


class RunRequested(Record):
    """Published on ``gyoza.runs.requested`` whenever a run (re)enters PENDING or changes priority."""

    run_id: str
    attempt: int
    priority: int


class IdempotencyEntry(Record):
    """KV ``gyoza_idempotency/<sha256 of the key>``: the run a key created (the bucket expires it after 24 h)."""

    run_id: str


class Health(Record):
    status: Literal["ok"] = "ok"
    version: str
    nats: Literal["embedded", "external"]


class ErrorDetail(Record):
    field: str
    problem: str


class ErrorInfo(Record):
    code: str
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)


class ErrorBody(Record):
    error: ErrorInfo


class RunListQuery(Input):
    """GET /runs query string (parsed from strings by the route, then validated here)."""

    model_config = ConfigDict(extra="forbid", strict=False)

    limit: Annotated[int, Field(ge=1, le=100)] = 10
    starting_after: str | None = None
    ending_before: str | None = None
    state: list[RunState] | None = None
    op_definition: str | None = None
    image: str | None = None
    topic: str | None = None
    worker_id: str | None = None
    created_gte: float | None = None
    created_gt: float | None = None
    created_lte: float | None = None
    created_lt: float | None = None

    def to_params(self) -> dict[str, str | int | float]:
        """The query string the server reads back into this model (``created_gte`` -> ``created[gte]``)."""
        params: dict[str, str | int | float] = {}
        for name, value in self.model_dump(exclude_none=True).items():
            if name == "state":
                value = ",".join(state.value for state in value)
            key = f"created[{name.removeprefix('created_')}]" if name.startswith("created_") else name
            params[key] = value
        return params


def validation_problems(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """pydantic's errors as the API's ``[{field, problem}]`` list, with dotted field paths."""
    problems = []
    for err in exc.errors():
        path = ".".join(str(part) for part in err["loc"])
        field = f"{prefix}.{path}" if prefix and path else (prefix or path or "body")
        problems.append({"field": field, "problem": err["msg"]})
    return problems
