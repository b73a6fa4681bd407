"""Configuration (SPEC §10): explicit flag > ``GYOZA_*`` environment variable > config file > default.

The config file is ``<data dir>/config.json``; ``gyoza up`` writes the server URL and the API key it generated
there, so the CLI and the SDK find them without any export.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gyoza.schema.retention import Retention, parse_retention

ENV_PREFIX = "GYOZA_"
CONFIG_FILE = "config.json"
DEFAULT_DATA_DIR = "~/.gyoza"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    server_url: str = "http://localhost:5555"
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=5555, ge=0, le=65535)
    data_dir: Path = Path(DEFAULT_DATA_DIR).expanduser()
    nats_url: str | None = None
    nats_creds: Path | None = None
    nats_replicas: int = Field(default=1, ge=1, le=5)
    heartbeat_interval: float = Field(default=2.0, gt=0)
    worker_timeout: float = Field(default=10.0, gt=0)
    lease_ttl: float = Field(default=5.0, gt=0)
    # Server processes sharing the port and one NATS; None: one per usable core (``gyoza up``: 1).
    server_workers: int | None = Field(default=None, ge=1, le=256)
    log_level: str = "info"
    # Webhooks (docs/webhooks.md): the first retry's delay (doubling, capped at 5 min), how many attempts before a
    # delivery is FAILED, and how long one POST may take.
    webhook_backoff: float = Field(default=2.0, gt=0, le=300)
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    webhook_timeout: float = Field(default=10.0, gt=0, le=120)
    # How long finished runs are kept, by state (docs/operations.md): ``completed=7d,failed=30d``; empty: forever.
    retention: str = ""

    @field_validator("retention")
    @classmethod
    def _retention_parses(cls, value: str) -> str:
        parse_retention(value)
        return value

    @property
    def retention_default(self) -> Retention:
        return parse_retention(self.retention)

    @classmethod
    def load(cls, **flags: Any) -> Settings:
        """Build settings from flags (None means "not given") over the environment over the config file."""
        given = {k: v for k, v in flags.items() if v is not None}
        env: dict[str, Any] = {}
        for name in cls.model_fields:
            value = os.environ.get(ENV_PREFIX + name.upper())
            if value not in (None, ""):
                env[name] = value
        data_dir = Path(given.get("data_dir") or env.get("data_dir") or DEFAULT_DATA_DIR).expanduser()
        values = {**read_config_file(data_dir), **env, **given, "data_dir": data_dir}
        return cls.model_validate(values)

    @property
    def embedded_nats(self) -> bool:
        return not self.nats_url


def read_config_file(data_dir: Path) -> dict[str, Any]:
    """The server URL and API key ``gyoza up`` stored (only those two keys are taken from the file)."""
    path = data_dir / CONFIG_FILE
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict):
        return {}
    return {k: v for k, v in stored.items() if k in ("server_url", "api_key") and isinstance(v, str)}


def write_config_file(data_dir: Path, server_url: str, api_key: str) -> Path:
    """Store where the local cluster listens and its key, readable by this user only."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CONFIG_FILE
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(json.dumps({"server_url": server_url, "api_key": api_key}, indent=2) + "\n")
    return path
