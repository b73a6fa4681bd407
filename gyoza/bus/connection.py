"""The NATS implementation of the ``Bus`` port: connect (embedded or external), apply the topology, open the buckets.

No nats-py object leaves ``gyoza.bus``: buckets are ``NatsBucket``s and messaging goes through the methods below.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Sequence

import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from gyoza.bus import messaging, names
from gyoza.bus.embedded import EmbeddedNats
from gyoza.bus.link import connect
from gyoza.bus.natskv import NatsBucket
from gyoza.bus.pipeline import AckPipeline
from gyoza.bus.port import MessageHandler, NatsState, RequestHandler, Stoppable
from gyoza.bus.probe import JetStreamProbe
from gyoza.bus.topology import TopologyKeeper
from gyoza.bus.translate import translate_errors
from gyoza.settings import Settings

log = logging.getLogger(__name__)

# JetStream API calls wait this long before giving up (a 503 to the caller, never a half-acknowledged write).
JS_TIMEOUT_S = 5.0


class NatsBus:
    """An open NATS connection with the JetStream context and the Gyoza buckets."""

    def __init__(
        self, nc: Client, js: JetStreamContext, pipeline: AckPipeline, buckets: dict[str, NatsBucket],
        logs: ObjectStore, topology: TopologyKeeper, embedded: EmbeddedNats | None = None,
    ) -> None:  # fmt: skip
        self._nc = nc
        self._topology = topology
        self._js = js
        self._pipeline = pipeline
        self.definitions = buckets[names.DEFINITIONS_BUCKET]
        self.runs = buckets[names.RUNS_BUCKET]
        self.workers = buckets[names.WORKERS_BUCKET]
        self.leases = buckets[names.LEASES_BUCKET]
        self.idempotency = buckets[names.IDEMPOTENCY_BUCKET]
        self.keys = buckets[names.KEYS_BUCKET]
        self.secrets = buckets[names.SECRETS_BUCKET]
        self._logs = logs
        self._embedded = embedded
        self.mode = "embedded" if embedded else "external"
        self._probe = JetStreamProbe(nc, f"KV_{names.RUNS_BUCKET}")

    async def state(self) -> NatsState:
        """Connected, and (checked at most every few seconds) does JetStream answer? No round trip when disconnected."""
        return await self._probe.state()

    async def publish_durable(self, subject: str, payload: bytes, msg_id: str | None = None) -> int:
        """Publish into a stream and wait for JetStream's ack, so the message is durable. Returns its sequence."""
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        with translate_errors():
            ack = await self._js.publish(subject, payload, headers=headers, timeout=JS_TIMEOUT_S)
        return int(ack.seq)

    async def publish_durable_many(self, messages: Sequence[tuple[str, bytes, str | None]]) -> list[int]:
        acks = await self._pipeline.publish_all(
            [(subject, payload, {"Nats-Msg-Id": msg_id} if msg_id else None) for subject, payload, msg_id in messages],
            JS_TIMEOUT_S,
        )
        refused = next((ack for ack in acks if not isinstance(ack, int)), None)
        if refused is not None:
            raise refused
        return [ack for ack in acks if isinstance(ack, int)]

    async def publish(self, subject: str, payload: bytes) -> None:
        await messaging.publish(self._nc, subject, payload)

    async def subscribe(self, subject: str, handler: MessageHandler) -> Stoppable:
        return await messaging.subscribe(self._nc, subject, handler)

    async def request(self, subject: str, payload: bytes, wait_s: float) -> bytes:
        return await messaging.request(self._nc, subject, payload, wait_s)

    async def serve(self, subject: str, handler: RequestHandler, queue: str = "") -> Stoppable:
        return await messaging.serve(self._nc, subject, handler, queue)

    async def consume(self, stream: str, durable: str, handler: MessageHandler) -> Stoppable:
        return await messaging.consume(self._js, stream, durable, handler)

    async def read_subject(self, stream: str, subject: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` messages of ``subject`` with stream sequence > ``after``, in order, as (seq, data)."""
        found: list[tuple[int, bytes]] = []
        seq = after + 1
        with translate_errors():
            while len(found) < limit:
                try:
                    msg = await self._js.get_msg(stream, seq=seq, subject=subject, next=True)
                except nats.js.errors.NotFoundError:
                    break
                seq = int(msg.seq or seq)
                found.append((seq, msg.data or b""))
                seq += 1
        return found

    async def read_object(self, name: str) -> bytes | None:
        """An object of the logs bucket, or None when there is none."""
        with translate_errors():
            try:
                result = await self._logs.get(name)
            except nats.js.errors.ObjectNotFoundError:
                return None
        return bytes(result.data or b"")

    async def write_object(self, name: str, data: bytes) -> None:
        """Store (or replace) an object of the logs bucket; returns once JetStream holds every chunk."""
        with translate_errors():
            await self._logs.put(name, data)

    async def delete_object(self, name: str) -> None:
        with translate_errors(), contextlib.suppress(nats.js.errors.ObjectNotFoundError):
            await self._logs.delete(name)

    async def purge_subject(self, stream: str, subject: str) -> None:
        with translate_errors():
            await self._js.purge_stream(stream, subject=subject)

    async def close(self) -> None:
        self._topology.stop()
        try:
            try:
                await self._nc.drain()
            except Exception:  # not connected right now: nothing to drain, just close
                with contextlib.suppress(Exception):
                    await self._nc.close()
        finally:
            if self._embedded is not None:
                self._embedded.stop()


_BUCKETS = (
    names.DEFINITIONS_BUCKET, names.RUNS_BUCKET, names.WORKERS_BUCKET, names.LEASES_BUCKET, names.IDEMPOTENCY_BUCKET,
    names.KEYS_BUCKET, names.SECRETS_BUCKET,
)  # fmt: skip


async def open_bus(settings: Settings) -> NatsBus:
    """Start the embedded server if configured, connect, apply ``broker/`` and bind the buckets."""
    embedded = None
    url = settings.nats_url
    if settings.embedded_nats:
        embedded = EmbeddedNats(settings.data_dir / "nats")
        url = await embedded.start()
        log.info("embedded nats-server listening on %s", url)
    assert url is not None
    try:
        # GYOZA_NATS_URL may list several cluster nodes, comma-separated (as docker-compose.yml does). The connection
        # name tells operators (``nats server report connections``) which server replica it is.
        creds = str(settings.nats_creds) if settings.nats_creds else None
        topology = TopologyKeeper(settings.nats_replicas)
        nc = await connect(url, creds, f"gyoza-server {socket.gethostname()}:{settings.port}", topology.reconnected)
        js = nc.jetstream(timeout=JS_TIMEOUT_S)
        await topology.apply(js)
        with translate_errors():
            pipeline = AckPipeline(nc)
            buckets = {
                name: NatsBucket(await js.key_value(name), js, name, pipeline, JS_TIMEOUT_S) for name in _BUCKETS
            }
            logs = await js.object_store(names.LOGS_BUCKET)
        return NatsBus(nc, js, pipeline, buckets, logs, topology, embedded)
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise
