"""Apply the JetStream topology declared in ``broker/`` (one JSON stream config per file).

The same files can be applied by an operator with ``nats stream add --config <file>`` (and, for the durable
consumers, ``nats consumer add <stream> --config <file's "config">``); the server applies them at start,
idempotently, overriding only the replica count (``GYOZA_NATS_REPLICAS``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import NotFoundError

import gyoza
from gyoza.bus.records import translate_errors

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


async def apply_topology(js: JetStreamContext, replicas: int, directory: Path | None = None) -> None:
    """Create or update every stream, bucket and durable consumer; ``Unavailable`` when JetStream cannot now."""
    with translate_errors():
        for stream in load_topology(directory):
            raw = dict(stream.config, num_replicas=replicas)
            config = StreamConfig.from_response(raw)
            try:
                await js.stream_info(raw["name"])
            except NotFoundError:
                await js.add_stream(config)
            else:
                await js.update_stream(config)
        for consumer in load_consumers(directory):
            await js.add_consumer(consumer["stream_name"], ConsumerConfig.from_response(dict(consumer["config"])))


def load_consumers(directory: Path | None = None) -> list[dict[str, Any]]:
    """``broker/consumers/<STREAM>.<durable>.json``: ``{"stream_name": ..., "config": <ConsumerConfig>}``."""
    base = directory or broker_dir()
    return [json.loads(p.read_text()) for p in sorted((base / "consumers").glob("*.json"))]
