"""Request/reply, plain publishes and the durable work-queue consumer over nats-py (for ``NatsBus``), and the
worker's own connection (``WorkerLink``).

Handlers are plain ``async`` callables over bytes, so the layers above never see a NATS type. A request handler's
``GyozaError`` crosses NATS as its error body with the ``Gyoza-Error`` header (its HTTP status), and the requester
raises it again: the same code, status and details as over REST.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from gyoza.bus.link import connect
from gyoza.bus.port import MessageHandler, RequestHandler
from gyoza.bus.translate import translate_errors
from gyoza.errors import GyozaError, Unavailable, error_from_body
from gyoza.supervision import stop_task

log = logging.getLogger(__name__)

ERROR_HEADER = "Gyoza-Error"
_FETCH_BATCH = 256
_FETCH_WAIT_S = 1.0


class Subscription:
    """A running subscription or consumer loop; ``stop()`` ends it."""

    def __init__(self, stop: Callable[[], Awaitable[Any]]) -> None:
        self._stop = stop

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._stop()


async def request(nc: Client, subject: str, payload: bytes, wait_s: float) -> bytes:
    """Send a request and wait for the one reply; ``Unavailable`` when nobody answers (no leader yet); the
    handler's error raised again when it refused."""
    with translate_errors():
        try:
            reply = await nc.request(subject, payload, timeout=wait_s)
        except nats.errors.NoRespondersError:
            raise Unavailable(f"nothing answers on {subject} (no leader or server yet); retry shortly") from None
        except nats.errors.TimeoutError:
            raise Unavailable(f"no answer on {subject} within {wait_s:g} s; retry shortly") from None
    status = (reply.headers or {}).get(ERROR_HEADER)
    if status is not None:
        raise error_from_body(int(status), json.loads(reply.data))
    return bytes(reply.data)


async def publish(nc: Client, subject: str, payload: bytes) -> None:
    """A core NATS publish: fire and forget (used where a lost message is recovered by other means)."""
    with translate_errors():
        await nc.publish(subject, payload)


async def subscribe(nc: Client, subject: str, handler: MessageHandler) -> Subscription:
    async def on_message(msg: Msg) -> None:
        try:
            await handler(msg.data)
        except Exception:
            log.exception("handling a message on %s failed", subject)

    with translate_errors():
        subscription = await nc.subscribe(subject, cb=on_message)
    return Subscription(subscription.unsubscribe)


async def serve(nc: Client, subject: str, handler: RequestHandler, queue: str = "") -> Subscription:
    """Answer requests on ``subject`` (wildcards allowed) with ``handler(subject, data)``; with a ``queue`` group,
    one member of the group answers each request (every server replica serves, each request is handled once).

    Each request is handled in its own task: nats-py runs a subscription's callbacks one at a time, so a handler that
    waits on a KV write (a worker's first heartbeat) would otherwise hold up every request behind it, and under load
    heartbeats would time out and get workers evicted.
    """
    handling: set[asyncio.Task[None]] = set()

    async def handle(msg: Msg) -> None:
        headers = None
        try:
            reply = await handler(msg.subject, msg.data)
        except GyozaError as exc:  # the requester raises it again
            log.info("refused %s: %s", msg.subject, exc.message)
            reply, headers = json.dumps(exc.to_body()).encode(), {ERROR_HEADER: str(exc.status)}
        except Exception:
            log.exception("handling %s failed", msg.subject)
            return
        if msg.reply:
            # Disconnected meanwhile: the requester times out and retries (a heartbeat comes again anyway).
            with contextlib.suppress(Unavailable), translate_errors():
                await nc.publish(msg.reply, reply, headers=headers)

    async def on_message(msg: Msg) -> None:
        task = asyncio.create_task(handle(msg))
        handling.add(task)
        task.add_done_callback(handling.discard)

    with translate_errors():
        subscription = await nc.subscribe(subject, queue=queue, cb=on_message)
    return Subscription(subscription.unsubscribe)


async def consume(js: JetStreamContext, stream: str, durable: str, handler: MessageHandler) -> Subscription:
    """Run ``handler`` for each message of the durable pull consumer; ack after it returns, nak if it raises.

    The consumer's config (ack wait, max deliver, back-off) is declared in ``broker/consumers``.
    """
    with translate_errors():
        subscription = await js.pull_subscribe_bind(durable=durable, stream=stream)

    async def loop() -> None:
        while True:
            try:
                with translate_errors():
                    messages = await subscription.fetch(_FETCH_BATCH, timeout=_FETCH_WAIT_S)
            except Unavailable as exc:
                # A fetch that found nothing in time is the idle case (nats-py raises a fetch timeout or, when its
                # deadline passes between requests under load, a bare TimeoutError). Anything else: NATS is away.
                if not isinstance(exc.__cause__, TimeoutError):
                    await asyncio.sleep(_FETCH_WAIT_S)
                continue
            except Exception:
                log.exception("fetching from %s failed; retrying", stream)
                await asyncio.sleep(_FETCH_WAIT_S)
                continue
            for msg in messages:
                await _handle(msg, handler, stream)

    task = asyncio.create_task(loop(), name=f"consume-{stream}")

    async def stop() -> None:
        await stop_task(task)
        await subscription.unsubscribe()

    return Subscription(stop)


async def _handle(msg: Msg, handler: MessageHandler, stream: str) -> None:
    """Ack after ``handler`` returns, nak if it raises. An ack or nak NATS cannot take now is given up: the message
    comes again after the consumer's ack wait, and handlers are idempotent."""
    try:
        await handler(msg.data)
    except GyozaError as exc:
        log.warning("handling a %s message failed: %s", stream, exc.message)
        settle = msg.nak(delay=1.0)
    except Exception:
        log.exception("handling a %s message failed", stream)
        settle = msg.nak(delay=1.0)
    else:
        settle = msg.ack()
    with contextlib.suppress(Unavailable), translate_errors():
        await settle


class WorkerLink:
    """A worker's own NATS connection (it has no Bus): its assignments subject, and requests to the servers."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc

    @classmethod
    async def open(cls, url: str, creds: str | None, name: str) -> WorkerLink:
        return cls(await connect(url, creds, name))

    async def listen(self, subject: str, handler: MessageHandler) -> Subscription:
        return await subscribe(self._nc, subject, handler)

    async def request(self, subject: str, payload: bytes, wait_s: float) -> bytes:
        return await request(self._nc, subject, payload, wait_s)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._nc.close()
