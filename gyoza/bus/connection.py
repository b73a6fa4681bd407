"""Connect to NATS (embedded or external), apply the topology and open the buckets every service needs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import nats
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from gyoza.bus import names
from gyoza.bus.embedded import EmbeddedNats
from gyoza.bus.records import translate_errors
from gyoza.bus.topology import apply_topology
from gyoza.settings import Settings

log = logging.getLogger(__name__)

# JetStream API calls wait this long before giving up (a 503 to the caller, never a half-acknowledged write).
JS_TIMEOUT_S = 5.0


@dataclass
class Bus:
    """An open NATS connection with the JetStream context and the Gyoza buckets."""

    nc: Client
    js: JetStreamContext
    definitions: KeyValue
    runs: KeyValue
    workers: KeyValue
    leases: KeyValue
    idempotency: KeyValue
    logs: ObjectStore
    embedded: EmbeddedNats | None = None
    mode: str = "external"

    async def publish(self, subject: str, payload: bytes, msg_id: str | None = None) -> int:
        """Publish into a stream and wait for JetStream's ack, so the message is durable. Returns its sequence."""
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        with translate_errors():
            ack = await self.js.publish(subject, payload, headers=headers, timeout=JS_TIMEOUT_S)
        return int(ack.seq)

    async def read_subject(self, stream: str, subject: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` messages of ``subject`` with stream sequence > ``after``, in order, as (seq, data)."""
        found: list[tuple[int, bytes]] = []
        seq = after + 1
        with translate_errors():
            while len(found) < limit:
                try:
                    msg = await self.js.get_msg(stream, seq=seq, subject=subject, next=True)
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
                result = await self.logs.get(name)
            except nats.js.errors.ObjectNotFoundError:
                return None
        return bytes(result.data or b"")

    async def write_object(self, name: str, data: bytes) -> None:
        """Store (or replace) an object of the logs bucket; returns once JetStream holds every chunk."""
        with translate_errors():
            await self.logs.put(name, data)

    async def close(self) -> None:
        try:
            await self.nc.drain()
        finally:
            if self.embedded is not None:
                self.embedded.stop()


async def open_bus(settings: Settings) -> Bus:
    """Start the embedded server if configured, connect, apply ``broker/`` and bind the buckets."""
    embedded = None
    url = settings.nats_url
    if settings.embedded_nats:
        embedded = EmbeddedNats(settings.data_dir / "nats")
        url = await embedded.start()
        log.info("embedded nats-server listening on %s", url)
    assert url is not None
    try:
        options: dict[str, Any] = {"name": "gyoza", "max_reconnect_attempts": -1, "reconnect_time_wait": 0.5}
        if settings.nats_creds:
            options["user_credentials"] = str(settings.nats_creds)
        # GYOZA_NATS_URL may list several cluster nodes, comma-separated (as docker-compose.yml does).
        servers = [part.strip() for part in url.split(",") if part.strip()]
        nc = await nats.connect(servers, **options)
        js = nc.jetstream(timeout=JS_TIMEOUT_S)
        await apply_topology(js, settings.nats_replicas)
        return Bus(
            nc=nc,
            js=js,
            definitions=await js.key_value(names.DEFINITIONS_BUCKET),
            runs=await js.key_value(names.RUNS_BUCKET),
            workers=await js.key_value(names.WORKERS_BUCKET),
            leases=await js.key_value(names.LEASES_BUCKET),
            idempotency=await js.key_value(names.IDEMPOTENCY_BUCKET),
            logs=await js.object_store(names.LOGS_BUCKET),
            embedded=embedded,
            mode="embedded" if embedded else "external",
        )
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise
