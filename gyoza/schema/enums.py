"""States, event types and reason codes (SPEC §2.3, §2.5)."""

from __future__ import annotations

from enum import StrEnum


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
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"  # its key's quota of GPUs, VRAM, CPU or RAM is in use by its other runs
    CONCURRENCY_LIMIT = "CONCURRENCY_LIMIT"  # its definition's max_concurrent, or its concurrency key's limit
    RETRY_BACKOFF = "RETRY_BACKOFF"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    EXIT_CODE = "EXIT_CODE"
    OOM_KILLED = "OOM_KILLED"
    GPU_OOM = "GPU_OOM"
    TIMEOUT = "TIMEOUT"
    WORKER_LOST = "WORKER_LOST"
    OUTPUT_INVALID = "OUTPUT_INVALID"
    OUTPUT_MISSING = "OUTPUT_MISSING"
    OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"
    IMAGE_NOT_FOUND = "IMAGE_NOT_FOUND"
    CONTAINER_ERROR = "CONTAINER_ERROR"
    USER = "USER"


class FailureReason(StrEnum):
    """The reason codes a FAILED attempt can carry; ``retry_on`` lists some of them."""

    EXIT_CODE = "EXIT_CODE"
    OOM_KILLED = "OOM_KILLED"
    GPU_OOM = "GPU_OOM"
    TIMEOUT = "TIMEOUT"
    WORKER_LOST = "WORKER_LOST"
    OUTPUT_INVALID = "OUTPUT_INVALID"
    OUTPUT_MISSING = "OUTPUT_MISSING"
    OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"  # the outputs do not fit a report (1 MiB): the worker never sent them
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
