"""Configuration (SPEC §10): explicit flag > ``GYOZA_*`` environment variable > default. One frozen object."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ENV_PREFIX = "GYOZA_"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    server_url: str = "http://localhost:5555"
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=5555, ge=0, le=65535)
    data_dir: Path = Path("~/.gyoza").expanduser()
    nats_url: str | None = None
    nats_creds: Path | None = None
    nats_replicas: int = Field(default=1, ge=1, le=5)
    heartbeat_interval: float = Field(default=2.0, gt=0)
    worker_timeout: float = Field(default=10.0, gt=0)
    lease_ttl: float = Field(default=5.0, gt=0)
    log_level: str = "info"

    @classmethod
    def load(cls, **flags: Any) -> Settings:
        """Build settings from flags (None means "not given") over the environment over defaults."""
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            env = os.environ.get(ENV_PREFIX + name.upper())
            if env not in (None, ""):
                values[name] = env
        values.update({k: v for k, v in flags.items() if v is not None})
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"]).expanduser()
        return cls.model_validate(values)

    @property
    def embedded_nats(self) -> bool:
        return not self.nats_url
