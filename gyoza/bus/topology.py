"""Apply the JetStream topology declared in ``broker/`` (one JSON stream config per file).

The same files can be applied by an operator with ``nats stream add --config <file>`` (and, for the durable
consumers, ``nats consumer add <stream> --config <file's "config">``); the server applies them at start,
idempotently, overriding only the replica count (``GYOZA_NATS_REPLICAS``), and again after every reconnect
(``TopologyKeeper``): a NATS that comes back empty (a node replaced, its store lost) gets every stream, bucket and
consumer back before anything can work on it, and one that kept its store is left as it was.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import NotFoundError

from gyoza.bus.broker import StreamFile, broker_dir, load_consumers, load_topology, nats_conf_path
from gyoza.bus.translate import translate_errors
from gyoza.errors import Unavailable
from gyoza.supervision import restart_delay

__all__ = [
    "StreamFile", "TopologyKeeper", "apply_topology", "broker_dir", "load_consumers", "load_topology", "nats_conf_path",
]  # fmt: skip

log = logging.getLogger(__name__)

# Re-applying after a reconnect retries while JetStream is not ready yet (a restarted node recovering its streams),
# from this delay, doubling, up to the cap.
REAPPLY_FIRST_S = 0.1
REAPPLY_MAX_S = 2.0


async def apply_topology(js: JetStreamContext, replicas: int, directory: Path | None = None) -> list[str]:
    """Create or update every stream, bucket and durable consumer; ``Unavailable`` when JetStream cannot now.
    Returns the names of the streams it had to create."""
    created = []
    with translate_errors():
        for stream in load_topology(directory):
            raw = dict(stream.config, num_replicas=replicas)
            config = StreamConfig.from_response(raw)
            try:
                await js.stream_info(raw["name"])
            except NotFoundError:
                await js.add_stream(config)
                created.append(raw["name"])
            else:
                await js.update_stream(config)
        for consumer in load_consumers(directory):
            await js.add_consumer(consumer["stream_name"], ConsumerConfig.from_response(dict(consumer["config"])))
    return created


class TopologyKeeper:
    """Applies the topology at start (``apply``) and again, in the background, after every reconnect."""

    def __init__(self, replicas: int, directory: Path | None = None) -> None:
        self._replicas = replicas
        self._directory = directory
        self._js: JetStreamContext | None = None
        self._task: asyncio.Task[None] | None = None

    async def apply(self, js: JetStreamContext) -> None:
        self._js = js
        await apply_topology(js, self._replicas, self._directory)

    def reconnected(self) -> None:
        """For ``gyoza.bus.link.connect``: start re-applying (a retry still running from a previous reconnect is
        replaced)."""
        if self._js is None:
            return  # not applied once yet: ``apply`` comes first
        self.stop()
        self._task = asyncio.get_running_loop().create_task(self._reapply(self._js), name="topology-reapply")

    async def _reapply(self, js: JetStreamContext) -> None:
        streak = 0
        while True:
            try:
                created = await apply_topology(js, self._replicas, self._directory)
            except Unavailable as exc:
                streak += 1
                if streak == 1:
                    log.warning("re-applying the topology after a reconnect: %s; retrying", exc.message)
                await asyncio.sleep(restart_delay(streak, REAPPLY_FIRST_S, REAPPLY_MAX_S))
                continue
            except Exception:  # a refusal is not an outage: retrying would not help; say so and leave it
                log.exception("could not re-apply the topology after a reconnect")
                return
            if created:
                # The KV watches resume on their own only on a store that kept its sequences; on a new one they miss
                # changes until a restart replays every bucket (and the disposable query index is rebuilt).
                log.error(
                    "NATS came back without %s (its store was lost): created them again; restart this server so that "
                    "its watches and query index start over from the new store",
                    ", ".join(created),
                )
            return

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
