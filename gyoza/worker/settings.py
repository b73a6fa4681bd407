"""The worker's settings: one frozen section, built once (flag > environment > default) and passed down.

What it shares with the rest of Gyoza comes from ``gyoza.settings.Settings`` (``GYOZA_SERVER_URL``,
``GYOZA_API_KEY``, ``GYOZA_HEARTBEAT_INTERVAL``, ``GYOZA_NATS_URL``, ``GYOZA_NATS_CREDS``, the config file ``gyoza up``
writes, and ``<data dir>/work`` as the work dir); each option of its own also reads ``GYOZA_WORKER_<OPTION>``
(``GYOZA_WORKER_NAME``, ``GYOZA_WORKER_TAGS=a,b``, ``GYOZA_WORKER_STOP_GRACE``, ...).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gyoza.op._contract import CONTAINER_IO_DIR
from gyoza.settings import ENV_PREFIX, Settings
from gyoza.worker.runtimes.base import DEFAULT_LOG_LIMIT

WORKER_ENV_PREFIX = f"{ENV_PREFIX}WORKER_"
# Taken from the shared settings, under their own GYOZA_* names.
SHARED = ("server_url", "api_key", "heartbeat_interval", "nats_url", "nats_creds")


class WorkerSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    work_dir: Path
    server_url: str = "http://localhost:5555"
    api_key: str | None = None
    name: str = Field(default_factory=socket.gethostname, min_length=1)  # the worker id
    tags: tuple[str, ...] = ()
    cpu: float | None = None  # None: detected
    ram_mb: int | None = None  # None: detected
    gpus: str = "auto"
    mode: Literal["rest", "nats"] = "rest"
    runtime: Literal["docker", "process"] = "docker"
    pull: Literal["if-missing", "always", "never"] = "if-missing"
    network: str = "bridge"
    heartbeat_interval: float = Field(default=2.0, gt=0)
    stop_grace: float = 10.0  # seconds between SIGTERM and kill when an op is stopped
    drain_timeout: float | None = None  # None: a drain waits for running ops without limit
    log_limit: int = DEFAULT_LOG_LIMIT
    nats_url: str | None = None
    nats_creds: Path | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _split_tags(cls, value: Any) -> Any:
        """``--tags a,b`` and ``GYOZA_WORKER_TAGS=a,b`` are comma-separated."""
        if isinstance(value, str):
            return tuple(tag.strip() for tag in value.split(",") if tag.strip())
        return value

    @field_validator("work_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Absolute once: attempt directories are mounted by path, and adopted by the path they were mounted from.
        return value.expanduser().resolve()

    @property
    def container_io_dir(self) -> str | None:
        """Where an op finds its attempt directory: mounted at /gyoza in a container; None for the host path (a
        process-runtime op runs on this machine)."""
        return CONTAINER_IO_DIR if self.runtime == "docker" else None

    @classmethod
    def load(cls, shared: Settings, **flags: Any) -> WorkerSettings:
        """Flags (None means "not given") over ``GYOZA_WORKER_*`` over the defaults, on ``shared``."""
        env: dict[str, Any] = {}
        for name in cls.model_fields.keys() - SHARED:
            value = os.environ.get(WORKER_ENV_PREFIX + name.upper())
            if value not in (None, ""):
                env[name] = value
        values = {name: getattr(shared, name) for name in SHARED}
        values["work_dir"] = shared.data_dir / "work"
        return cls.model_validate({**values, **env, **{k: v for k, v in flags.items() if v is not None}})
