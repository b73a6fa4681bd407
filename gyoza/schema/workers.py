"""Workers and scheduling: heartbeats, worker records and views, assignments, the leader lease."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from gyoza.schema._base import Input, OpName, Part, Record, StoredRecord, Tag, Version
from gyoza.schema.definitions import Constraints, OutputSpec
from gyoza.schema.enums import RunState
from gyoza.schema.runs import WorkerEventIn
from gyoza.schema.secrets import PullCredential

# Run ids are UUIDs (they reach KV keys): the whole id must match.
RUN_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class WorkerStatus(StrEnum):
    ONLINE = "ONLINE"
    DRAINING = "DRAINING"
    OFFLINE = "OFFLINE"


class GpuInfo(Part):
    index: Annotated[int, Field(ge=0, le=1023)]
    uuid: Annotated[str, Field(max_length=128)] = ""
    name: Annotated[str, Field(max_length=128)] = ""
    vram_mb: Annotated[int, Field(ge=0, le=1 << 30)]


class WorkerResources(Part):
    cpu: Annotated[float, Field(ge=0, le=100_000)]
    ram_mb: Annotated[int, Field(ge=0, le=1 << 40)]
    gpus: Annotated[list[GpuInfo], Field(max_length=256)] = Field(default_factory=list)


class HeldAttempt(Input):
    run_id: str
    attempt: Annotated[int, Field(ge=1)]


MAX_REPORTED_IMAGES = 1000
MAX_REPORTED_INSTANCES = 1000


class WarmInstance(Part):
    """A warm instance on a worker (docs/ops.md): a container of one definition version serving its runs one at a
    time, holding ``gpu_ids`` (``vram_mb`` each) while it lives; ``busy`` while it runs an attempt."""

    id: Annotated[str, Field(min_length=1, max_length=64)]
    definition: OpName
    version: Version
    gpu_ids: Annotated[list[Annotated[int, Field(ge=0, le=1023)]], Field(max_length=256)] = Field(default_factory=list)
    vram_mb: Annotated[int, Field(ge=0, le=1 << 30)] = 0
    busy: bool = False


class HeartbeatIn(Input):
    """POST /workers/{id}/heartbeat and NATS ``gyoza.workers.<id>.heartbeat``."""

    resources: WorkerResources
    tags: Annotated[list[Tag], Field(max_length=64)] = Field(default_factory=list)
    running: Annotated[list[HeldAttempt], Field(max_length=10_000)] = Field(default_factory=list)
    version: Annotated[str, Field(max_length=64)] = ""
    # The images the worker has pulled (``repo:tag``): placement prefers a worker that need not pull.
    images: Annotated[list[Annotated[str, Field(max_length=512)]], Field(max_length=MAX_REPORTED_IMAGES)] = Field(
        default_factory=list
    )
    # Its warm instances: placement prefers a worker with an idle one of the run's definition version.
    warm: Annotated[list[WarmInstance], Field(max_length=MAX_REPORTED_INSTANCES)] = Field(default_factory=list)


class WorkerCommand(Record):
    type: Literal["cancel"]
    run_id: str
    attempt: int


class HeartbeatReply(Record):
    commands: list[WorkerCommand] = Field(default_factory=list)
    heartbeat_interval_s: float


class WorkerEventReport(WorkerEventIn):
    """A NATS-mode worker's event, a request on ``gyoza.workers.<id>.events``: the body of POST /runs/{id}/events
    with the run id; the reply is ``{}`` or the same error as over REST."""

    run_id: Annotated[str, StringConstraints(pattern=RUN_ID_PATTERN)]


class WorkerRecord(StoredRecord):
    """KV ``gyoza_workers/<worker_id>``, written only by the scheduler leader."""

    id: str
    status: WorkerStatus
    resources: WorkerResources
    tags: list[str] = Field(default_factory=list)
    version: str = ""
    images: list[str] = Field(default_factory=list)
    warm: list[WarmInstance] = Field(default_factory=list)
    registered_at: datetime
    last_heartbeat: datetime


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
    images: list[str] = Field(default_factory=list)  # pulled on it, as its last heartbeat said
    warm: list[WarmInstance] = Field(default_factory=list)  # its warm instances, as its last heartbeat said
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
    # Warm instances (the definition's): keep the container up this long after the attempt to serve the next run.
    keep_warm_seconds: float | None = None
    max_instances: int | None = None
    # Released for this attempt only (docs/secrets.md): the values of the run's secrets, by environment variable,
    # which the worker also masks in the captured log; or why they could not be (the worker then fails the attempt
    # with it, starting nothing). And the login for the image's registry, when one is stored.
    secret_env: dict[str, str] = Field(default_factory=dict, repr=False)
    secret_error: str | None = None
    pull_credential: PullCredential | None = None


class AssignmentList(Record):
    data: list[Assignment]


class LeaderLease(StoredRecord):
    """KV ``gyoza_leases/scheduler``: which server replica runs the scheduler, until when."""

    holder: str
    expires_at: datetime
    # The topic outbox's cursor: every run-record version up to this revision has its events published.
    outbox_through: int = 0
