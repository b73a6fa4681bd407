"""Apply the JetStream topology declared in ``broker/`` (one JSON stream config per file).

The same files can be applied by an operator with ``nats stream add --config <file>`` (and, for the durable
consumers, ``nats consumer add <stream> --config <file's "config">``); the server applies them at start,
idempotently, overriding only the replica count (``GYOZA_NATS_REPLICAS``).
"""

from __future__ import annotations

from pathlib import Path

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import NotFoundError

from gyoza.bus.broker import StreamFile, broker_dir, load_consumers, load_topology, nats_conf_path
from gyoza.bus.translate import translate_errors

__all__ = ["StreamFile", "apply_topology", "broker_dir", "load_consumers", "load_topology", "nats_conf_path"]


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
