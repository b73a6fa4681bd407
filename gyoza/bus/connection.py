"""Connect to NATS (embedded or external), apply the topology and open the buckets every service needs."""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from gyoza.bus import names
from gyoza.bus.embedded import EmbeddedNats
from gyoza.bus.probe import JetStreamProbe, NatsState
from gyoza.bus.records import translate_errors
from gyoza.bus.topology import apply_topology
from gyoza.settings import Settings

log = logging.getLogger(__name__)

# JetStream API calls wait this long before giving up (a 503 to the caller, never a half-acknowledged write).
JS_TIMEOUT_S = 5.0

# How nats-py connects. ``pending_size=0``: no publish buffer while reconnecting. By default nats-py keeps publishes
# made while disconnected (2 MiB) and sends them once it is connected again, long after their callers were answered
# 503; those requests then landed anyway (issue 15 item 3). Without the buffer such a publish fails at once and the
# caller gets its 503 at once. Pings every 5 s find a silent (not closed) connection within ~15 s, not minutes.
_CONNECT_OPTIONS: dict[str, Any] = {
    "pending_size": 0,
    "max_reconnect_attempts": -1,
    "reconnect_time_wait": 0.5,
    "ping_interval": 5,
    "max_outstanding_pings": 3,
}


async def connect(url: str, creds: str | None, name: str) -> Client:
    """Connect to the nodes listed in ``url`` (comma-separated) and keep reconnecting forever if the link drops."""
    nc = Client()

    async def on_disconnect() -> None:
        if not nc.is_closed:  # closing (server shutdown) also ends here
            log.warning("lost the connection to NATS; reconnecting")
            _drop_unsent_publishes(nc)

    async def on_reconnect() -> None:
        log.warning("reconnected to NATS at %s", nc.connected_url.netloc if nc.connected_url else "?")

    async def on_error(exc: Exception) -> None:
        # Every failed reconnect attempt lands here; the disconnect and the reconnect are logged above.
        log.debug("nats: %s: %s", type(exc).__name__, exc)

    options = dict(_CONNECT_OPTIONS, name=name, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect)
    if creds:
        options["user_credentials"] = creds
    with translate_errors():
        await nc.connect([part.strip() for part in url.split(",") if part.strip()], error_cb=on_error, **options)
    return nc


def _drop_unsent_publishes(nc: Client) -> None:
    """Forget publishes still queued when the connection broke, so a reconnect never sends them late.

    Even with no reconnect buffer, a publish queued just before the link broke stays in nats-py's pending list and
    would go out after the reconnect; its caller times out (503) meanwhile. nats-py has no option for this, so its
    pending list is filtered here (subscriptions are replayed by nats-py itself, other commands are kept).
    """
    pending = getattr(nc, "_pending", None)
    if not isinstance(pending, list):
        return
    kept = [command for command in pending if not command.startswith((b"PUB ", b"HPUB "))]
    if len(kept) != len(pending):
        log.warning("dropped %d publishes that had not left before the NATS connection broke", len(pending) - len(kept))
        nc._pending = kept
        nc._pending_data_size = sum(len(command) for command in kept)


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
    probe: JetStreamProbe = field(init=False)

    def __post_init__(self) -> None:
        self.probe = JetStreamProbe(self.nc, f"KV_{names.RUNS_BUCKET}")

    async def state(self) -> NatsState:
        """Connected, and (checked at most every few seconds) does JetStream answer? No round trip when disconnected."""
        return await self.probe.state()

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
            try:
                await self.nc.drain()
            except Exception:  # not connected right now: nothing to drain, just close
                with contextlib.suppress(Exception):
                    await self.nc.close()
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
        # GYOZA_NATS_URL may list several cluster nodes, comma-separated (as docker-compose.yml does). The connection
        # name tells operators (``nats server report connections``) which server replica it is.
        creds = str(settings.nats_creds) if settings.nats_creds else None
        nc = await connect(url, creds, f"gyoza-server {socket.gethostname()}:{settings.port}")
        js = nc.jetstream(timeout=JS_TIMEOUT_S)
        await apply_topology(js, settings.nats_replicas)
        with translate_errors():
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
