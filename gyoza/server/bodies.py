"""Request bodies, bounded before the application sees them: an ASGI layer between Hypercorn and Quart.

Quart buffers a request body as it arrives, whether or not the route reads it, so every limit has to apply while
the body streams in. This layer passes a body on only when the request carries the API key and stays within the
route's limit; everything else is read and dropped, so memory stays bounded whatever clients send.

Hypercorn closes a keep-alive connection when a response goes out before the request body was received, and a
client still sending then sees a reset instead of the answer. So the response waits until the body has been read
(or dropped), up to a cap; past the cap, or for a request without the key, the connection is closed after the
answer (``Connection: close``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    HTTPRequestEvent,
    HTTPScope,
    Scope,
    WebsocketScope,
)

# What the checks look at: a request's (or a websocket's) path and headers.
RequestScope = HTTPScope | WebsocketScope

SCOPE_KEY = "gyoza.body"
# A body the server does not want is still read (and dropped) up to this size or time, so that its sender gets the
# answer rather than a reset; beyond either, the connection is closed.
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
DRAIN_TIMEOUT_S = 10.0


@dataclass
class BodyGuard:
    """One request's body as this layer passes it on; routes read it from ``request.scope[SCOPE_KEY]``."""

    receive: ASGIReceiveCallable
    authorized: bool
    limit: int
    received: int = 0
    too_large: bool = False
    # Dropping stopped at the cap: the rest of the body is never read and the connection closes after the answer.
    abandoned: bool = False
    # The body is over (received, dropped or abandoned); the application has or has not been told yet.
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_told: bool = False

    def expect(self, declared: int | None) -> None:
        """Judge the body by its Content-Length before any of it arrives (None: chunked, judged as it comes)."""
        if declared is None:
            return
        self.too_large = declared > self.limit
        if declared > DRAIN_LIMIT_BYTES:
            self.abandon()
        elif declared == 0:
            self.ended.set()

    def abandon(self) -> None:
        """Stop reading: the application is told the body ended, and the connection closes after the answer."""
        self.abandoned = True
        self.ended.set()

    async def next_message(self) -> ASGIReceiveEvent:
        """The application's ``receive``: the body when it may have it, otherwise only its end."""
        while True:
            if self.ended.is_set() and not self.end_told:
                self.end_told = True
                return _END
            message = await self.receive()
            if message["type"] != "http.request":
                self.ended.set()
                return message
            if self.ended.is_set():
                continue  # the rest of an abandoned body, arriving after the end was told
            self.received += len(message.get("body", b""))
            self.too_large = self.too_large or self.received > self.limit
            if self.received > DRAIN_LIMIT_BYTES:
                self.abandon()
            elif not message.get("more_body", False):
                self.ended.set()
            if self.authorized and not self.too_large:
                self.end_told = self.ended.is_set()
                return message


_END: HTTPRequestEvent = {"type": "http.request", "body": b"", "more_body": False}


class BoundedBodies:
    """``authorized(scope)`` says whether the request carries the key; ``limit(scope)`` its body limit in bytes."""

    def __init__(
        self, app: ASGIFramework, authorized: Callable[[RequestScope], bool], limit: Callable[[HTTPScope], int]
    ) -> None:
        self.app = app
        self.authorized = authorized
        self.limit = limit

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        guard = BodyGuard(receive, authorized=self.authorized(scope), limit=self.limit(scope))
        guard.expect(_declared_length(scope))
        cast(dict[str, Any], scope)[SCOPE_KEY] = guard

        async def send_after_the_body(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                if not guard.ended.is_set():
                    try:
                        await asyncio.wait_for(guard.ended.wait(), DRAIN_TIMEOUT_S)
                    except TimeoutError:
                        guard.abandon()
                if not guard.authorized or guard.abandoned:
                    message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
            await send(message)

        await self.app(scope, guard.next_message, send_after_the_body)


def _declared_length(scope: HTTPScope) -> int | None:
    """Content-Length, 0 when the request has no body at all, None when it is chunked (size unknown)."""
    headers = dict(scope["headers"])
    if b"transfer-encoding" in headers:
        return None
    with contextlib.suppress(ValueError):
        return int(headers.get(b"content-length", b"0"))
    return 0
