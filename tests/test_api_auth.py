"""Auth, connection handling and the API description (SPEC §4): 401 everywhere but /health, docs public."""

from __future__ import annotations

import httpx
import pytest

from tests.api_checks import NoTrace, error_of
from tests.processes import API_KEY, GyozaServer

PROTECTED = [
    ("GET", "/definitions"),
    ("POST", "/definitions"),
    ("GET", "/definitions/some-op"),
    ("GET", "/definitions/some-op/versions"),
    ("DELETE", "/definitions/some-op"),
    ("POST", "/definitions/some-op/runs"),
    ("GET", "/runs"),
    ("POST", "/runs"),
    ("GET", "/runs/00000000-0000-4000-8000-000000000000"),
    ("PATCH", "/runs/00000000-0000-4000-8000-000000000000"),
    ("GET", "/runs/00000000-0000-4000-8000-000000000000/attempts"),
    ("GET", "/runs/00000000-0000-4000-8000-000000000000/events"),
    ("GET", "/runs/00000000-0000-4000-8000-000000000000/logs"),
    ("POST", "/runs/00000000-0000-4000-8000-000000000000/cancel"),
    ("POST", "/runs/00000000-0000-4000-8000-000000000000/retry"),
    ("POST", "/runs/00000000-0000-4000-8000-000000000000/events"),
    ("PUT", "/runs/00000000-0000-4000-8000-000000000000/logs"),
    ("GET", "/topics/results/events"),
    ("GET", "/workers"),
    ("GET", "/workers/some-worker"),
    ("POST", "/workers/some-worker/heartbeat"),
    ("POST", "/workers/some-worker/claim"),
    ("POST", "/workers/some-worker/drain"),
    ("GET", "/metrics"),
    ("GET", "/no-such-endpoint"),
]


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}], ids=["missing", "wrong", "empty"])
async def test_every_endpoint_but_health_needs_the_key(
    server: GyozaServer, nothing_written: NoTrace, headers: dict[str, str]
) -> None:
    body = {"image": "alpine:3", "name": "some-op", "version": "1"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as anonymous, nothing_written():
        for method, path in PROTECTED:
            response = await anonymous.request(method, path, json=body if method in ("POST", "PATCH") else None)
            error_of(response, 401, "UNAUTHORIZED")
        assert (await anonymous.get("/health")).status_code == 200


async def test_early_refusals_keep_the_connection_usable(server: GyozaServer) -> None:
    # A refusal sent before the request body was read (401 from the auth check, 404 from routing) must not break
    # the keep-alive connection that SDK clients reuse for their next request.
    async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=1)) as http:
        for _ in range(50):
            error_of(await http.post("/runs", json={"image": "alpine:3"}), 401, "UNAUTHORIZED")
            refused = await http.post("/no-such-endpoint", json={"a": 1}, headers={"X-API-Key": API_KEY})
            error_of(refused, 404, "NOT_FOUND")
            assert (await http.get("/health")).status_code == 200


async def test_openapi_lists_the_main_paths(server: GyozaServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        spec = await http.get("/openapi.json")
        docs = await http.get("/docs")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in (
        "/definitions",
        "/definitions/{name}",
        "/definitions/{name}/versions",
        "/definitions/{name}/runs",
        "/runs",
        "/runs/{run_id}",
        "/runs/{run_id}/attempts",
        "/runs/{run_id}/events",
        "/runs/{run_id}/cancel",
        "/runs/{run_id}/retry",
    ):
        assert path in paths, path
    assert {"get", "patch"} <= set(paths["/runs/{run_id}"])
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text
