"""The JetStream topology declared in ``broker/`` (one JSON config per stream, bucket and durable consumer).

Read by the NATS bus to apply it and by the in-memory twin to behave alike (subjects, limits, duplicate windows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import gyoza

_SECTIONS = ("kv", "streams", "objects")


def broker_dir() -> Path:
    """``gyoza/_broker`` in an installed wheel; the repository's ``broker/`` in a source checkout."""
    packaged = Path(str(resources.files(gyoza))) / "_broker"
    if packaged.is_dir():
        return packaged
    return Path(gyoza.__file__).resolve().parent.parent / "broker"


def nats_conf_path() -> Path:
    packaged = broker_dir() / "nats.conf"
    if packaged.is_file():
        return packaged
    return Path(gyoza.__file__).resolve().parent.parent / "nats.conf"


@dataclass(frozen=True)
class StreamFile:
    path: Path
    config: dict[str, Any]


def load_topology(directory: Path | None = None) -> list[StreamFile]:
    base = directory or broker_dir()
    files = [p for section in _SECTIONS for p in sorted((base / section).glob("*.json"))]
    if not files:
        raise FileNotFoundError(f"no JetStream topology files under {base}")
    return [StreamFile(p, json.loads(p.read_text())) for p in files]


def load_consumers(directory: Path | None = None) -> list[dict[str, Any]]:
    """``broker/consumers/<STREAM>.<durable>.json``: ``{"stream_name": ..., "config": <ConsumerConfig>}``."""
    base = directory or broker_dir()
    return [json.loads(p.read_text()) for p in sorted((base / "consumers").glob("*.json"))]
