"""The client SDK raises only ``GyozaError`` subclasses: an answer it cannot read is ``BadResponse``, a server it
cannot reach ``Unavailable``, a refusal the server's own error. The server here is an httpx mock transport (the unit
under test is the client's request building and answer reading)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gyoza.client import AsyncGyozaClient, GyozaClient
from gyoza.errors import BadResponse, GyozaError, RunNotFound, Unavailable
from gyoza.schema import Constraints

Handler = Callable[[httpx.Request], httpx.Response]
RUN_ID = "8d3c1c52-0b8e-4d47-9a37-3f1d1f8e2a10"


def _raise(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


ANSWERS: dict[str, tuple[Handler, type[GyozaError]]] = {
    "html": (lambda r: httpx.Response(200, text="<html>proxy login</html>"), BadResponse),
    "wrong shape": (lambda r: httpx.Response(200, json={"id": RUN_ID}), BadResponse),
    "empty": (lambda r: httpx.Response(200), BadResponse),
    "refused connection": (_raise(httpx.ConnectError("connection refused")), Unavailable),
    "read timeout": (_raise(httpx.ReadTimeout("timed out")), Unavailable),
    "bad encoding": (_raise(httpx.DecodingError("invalid gzip")), BadResponse),
    "redirect loop": (_raise(httpx.TooManyRedirects("too many")), BadResponse),
    "server refusal": (
        lambda r: httpx.Response(404, json={"error": {"code": "RUN_NOT_FOUND", "message": "no run", "details": []}}),
        RunNotFound,
    ),
    "proxy 502 page": (lambda r: httpx.Response(502, text="Bad Gateway"), BadResponse),
}


@pytest.mark.parametrize("case", ANSWERS)
def test_sync_client_raises_gyoza_errors_only(case: str) -> None:
    handler, expected = ANSWERS[case]
    with (
        GyozaClient("http://gyoza.test", "k", transport=httpx.MockTransport(handler)) as client,
        pytest.raises(expected) as raised,
    ):
        client.get_run(RUN_ID)
    assert type(raised.value) is expected and raised.value.message


@pytest.mark.parametrize("case", ANSWERS)
async def test_async_client_raises_the_same(case: str) -> None:
    handler, expected = ANSWERS[case]
    async with AsyncGyozaClient("http://gyoza.test", "k", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(expected) as raised:
            await client.get_run(RUN_ID)
    assert type(raised.value) is expected and raised.value.message


def test_bad_response_says_what_was_asked() -> None:
    client = GyozaClient("http://gyoza.test", "k", transport=httpx.MockTransport(ANSWERS["html"][0]))
    with client, pytest.raises(BadResponse, match=f"GET /runs/{RUN_ID} with HTTP 200"):
        client.get_run(RUN_ID)


def test_create_run_sends_the_overrides_given() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(500, json={"error": {"code": "INTERNAL", "message": "stop here"}})

    with GyozaClient("http://gyoza.test", "k", transport=httpx.MockTransport(handler)) as client:
        for overrides in (
            {},
            {"constraints": Constraints(vram_mb=8000), "retry_policy": {"max_attempts": 3}, "tags": ["a100"]},
            {"timeout_seconds": 60.0, "env": {"MODE": "fast"}},
        ):
            with pytest.raises(GyozaError):
                client.create_run("op", {"x": 1}, priority=7, **overrides)
    assert sent == [
        {"inputs": {"x": 1}, "priority": 7},
        # Only what was given: the definition keeps its GPU count and every other field.
        {"inputs": {"x": 1}, "priority": 7, "constraints": {"vram_mb": 8000}, "retry_policy": {"max_attempts": 3},
         "tags": ["a100"]},
        {"inputs": {"x": 1}, "priority": 7, "timeout_seconds": 60.0, "env": {"MODE": "fast"}},
    ]  # fmt: skip
