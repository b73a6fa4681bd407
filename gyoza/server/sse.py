"""Server-Sent Events responses, and the seconds-valued query parameters of the streaming and waiting routes."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator

from pydantic import BaseModel, Field
from quart import Response, request

from gyoza.errors import InvalidRequest
from gyoza.services.livestreams import Message

_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")
# No proxy may buffer or cache a stream (X-Accel-Buffering: nginx's switch).
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Replies of a run creation with ?wait= (the run once terminal, or as it stands then): bounded like a claim's wait.
MAX_CREATE_WAIT_S = 60.0


class CreateRunQuery(BaseModel):
    wait: float = Field(
        0, description="seconds (0-60) to wait for the run to end: the answer is the finished run when it ends in "
        "time, else the run as it stands",
    )  # fmt: skip


def query_seconds(name: str, default: float | None, low: float, high: float) -> float | None:
    """A number of seconds from the query (plain decimal: no sign, exponent, NaN or infinity); 400 naming it."""
    raw = request.args.get(name)
    if raw is None:
        return default
    value = float(raw) if _SECONDS.fullmatch(raw) else -1.0
    if not low <= value <= high:
        raise InvalidRequest(
            f"{name} must be a number of seconds from {low:g} to {high:g}",
            [{"field": name, "problem": f"expected seconds from {low:g} to {high:g}"}],
        )
    return value


def create_wait() -> float:
    """``?wait=`` of a run creation: seconds to wait for the run to end before answering (0: answer at once)."""
    return query_seconds("wait", 0.0, 0.0, MAX_CREATE_WAIT_S) or 0.0


def encode(message: Message | None) -> bytes:
    """One SSE message (``None``: a heartbeat comment). Data is one line of JSON, which escapes every newline."""
    if message is None:
        return b": keep-alive\n\n"
    return f"id: {message.id}\nevent: {message.kind}\ndata: {message.data}\n\n".encode()


def event_stream(messages: AsyncGenerator[Message | None, None]) -> Response:
    """A streamed ``text/event-stream`` response; a client that leaves cancels the generator (and its watches)."""

    async def body() -> AsyncIterator[bytes]:
        # Closed with the response (Quart closes the body when the client leaves): the watches go at once, not at GC.
        async with contextlib.aclosing(messages):
            yield b": stream open\n\n"  # the headers and a first byte go out at once, before any wait
            async for message in messages:
                yield encode(message)

    response = Response(body(), content_type="text/event-stream; charset=utf-8", headers=HEADERS)
    response.timeout = None  # Quart would cut a response body off after RESPONSE_TIMEOUT (60 s)
    return response
