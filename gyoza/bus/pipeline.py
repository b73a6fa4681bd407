"""Many JetStream publishes in flight at once, each with its own ack, without a task or a request per message.

A batch of 500 runs is 500 KV creates and 500 run requests. Sent as one ``js.publish`` each (a coroutine, a task
under ``gather``, a request future and a timer), most of the server's time went to that machinery rather than to
the messages. Here every message of a call goes out at once with a reply subject under one inbox of this
connection, and the call waits for all the acks together.

nats-py's ``publish_async`` does the same, but when the publish itself fails (refused while reconnecting: Gyoza
buffers nothing then) it keeps that message's slot of its bounded semaphore for ever, so a few outages would stall
every later batch; this pipeline forgets every future of a failed call.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from typing import Any

import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from gyoza.bus.translate import translate_errors

# (subject, payload, headers) of one publish.
Publish = tuple[str, bytes, dict[str, str] | None]


class AckPipeline:
    """Publishes into JetStream streams with pipelined acks over one reply subscription."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._subscription: Subscription | None = None
        self._subscribing = asyncio.Lock()

    async def publish_all(self, messages: Sequence[Publish], timeout_s: float) -> list[int | nats.js.errors.APIError]:
        """Publish every message, then wait (``timeout_s`` for them all) for each ack: per message its stream
        sequence, or the 400 ``APIError`` JetStream refused it with (wrong last sequence, say). ``Unavailable`` when
        NATS cannot take them or did not answer in time; some may have been stored then, as with a single publish."""
        loop = asyncio.get_running_loop()
        tokens: list[str] = []
        futures: list[asyncio.Future[Msg]] = []
        try:
            with translate_errors():
                prefix = await self._reply_prefix()
                for subject, payload, headers in messages:
                    token = str(next(self._tokens))
                    future: asyncio.Future[Msg] = loop.create_future()
                    self._waiting[token] = future
                    tokens.append(token)
                    futures.append(future)
                    await self._nc.publish(subject, payload, reply=prefix + token, headers=headers)
                async with asyncio.timeout(timeout_s):
                    acks = await asyncio.gather(*futures)
                return [_ack(msg) for msg in acks]
        finally:
            for token in tokens:
                self._waiting.pop(token, None)
            for future in futures:
                future.cancel()  # no-op once done; frees nothing else, as nothing else holds them

    async def _reply_prefix(self) -> str:
        async with self._subscribing:
            if self._subscription is None:
                self._prefix = self._nc.new_inbox() + "."
                self._subscription = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)
        return self._prefix

    async def _on_ack(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)


def _ack(msg: Msg) -> int | nats.js.errors.APIError:
    """The sequence of a JetStream publish ack, or the request's refusal (a 400: wrong last sequence, say). No stream
    for the subject, or JetStream unable to serve: raised, so that ``translate_errors`` makes it ``Unavailable``."""
    if msg.headers and msg.headers.get("Status") == "503":
        raise nats.js.errors.NoStreamResponseError
    body: dict[str, Any] = json.loads(msg.data)
    if "error" not in body:
        return int(body["seq"])
    try:
        nats.js.errors.APIError.from_error(body["error"])  # raises the error's own class
    except nats.js.errors.BadRequestError as refused:
        return refused
    raise AssertionError("APIError.from_error always raises")
