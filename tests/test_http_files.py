"""The ``http/*.http`` request files run against a live server, so they never rot.

Each file runs twice against the same server: people re-run these files against one cluster, so every status a
file expects must hold on a second pass too. Every endpoint in the OpenAPI description must be exercised by at
least one request that expects success.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.httpfile import HttpFileError, Runner, parse, request_targets
from tests.processes import API_KEY, GyozaServer

REPO = Path(__file__).resolve().parent.parent
HTTP_DIR = REPO / "http"
HTTP_FILES = sorted(HTTP_DIR.glob("*.http"))
# The API's own description; /docs is the page that renders it.
UNCOVERED_BY_DESIGN = {("GET", "/openapi.json"), ("GET", "/docs")}


def test_there_are_request_files() -> None:
    assert len(HTTP_FILES) >= 5, f"expected the request files in {HTTP_DIR}"


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GyozaServer]:
    """A server of its own: workers.http registers a worker, whose scheduler must not meet other tests' runs."""
    gyoza = GyozaServer(tmp_path_factory.mktemp("http-files"), None).start()
    yield gyoza
    gyoza.stop()


@pytest.mark.parametrize("path", HTTP_FILES, ids=[p.name for p in HTTP_FILES])
async def test_request_file_runs(path: Path, http_server: GyozaServer) -> None:
    server = http_server
    http_file = parse(path)
    # The files must carry the editor defaults this test overrides, or users could not run them as they are.
    assert http_file.variables.get("baseUrl") == "http://localhost:5555"
    assert http_file.variables.get("apiKey") == "dev-key"
    assert http_file.requests, f"{path.name} holds no request"
    overrides = {"baseUrl": server.url, "apiKey": API_KEY}
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(2):
            failures = await Runner(http_file, overrides).run(http)
            assert not failures, "\n".join(failures)


async def test_every_endpoint_is_covered(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    endpoints = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert ("POST", "/runs") in endpoints, "the OpenAPI description lost its paths"
    sent = [
        (request.method, target, request.expect)
        for http_file in map(parse, HTTP_FILES)
        for request, target in request_targets(http_file)
    ]
    missing = sorted(
        f"{method} {template}"
        for method, template in endpoints - UNCOVERED_BY_DESIGN
        if not any(
            m == method and _matches(template, target) and any(200 <= s < 300 for s in expect)
            for m, target, expect in sent
        )
    )
    assert not missing, f"endpoints without a successful example in http/*.http: {missing}"


def _matches(template: str, path: str) -> bool:
    pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
    return re.fullmatch(pattern, path) is not None


def test_coverage_matching_is_by_method_and_path_template() -> None:
    # The coverage test is only as good as this matcher: a parameter is one whole path segment.
    assert _matches("/runs/{run_id}/cancel", "/runs/abc/cancel")
    assert not _matches("/runs/{run_id}", "/runs/abc/cancel")
    assert not _matches("/runs/{run_id}", "/runs/")


def test_parser_reads_the_format(tmp_path: Path) -> None:
    sample = tmp_path / "sample.http"
    sample.write_text(
        "@baseUrl = http://localhost:5555\n@root = {{baseUrl}}/runs\n\n"
        "### create\n# @name made\n# expect: 200|201\nPOST {{root}} HTTP/1.1\nX-API-Key: k\n\n"
        '{"a": 1}\n\n'
        "###\n// plain comment\n# expect: 404 RUN_NOT_FOUND\nGET {{root}}/{{made.response.body.$.data[1].id}}\n"
    )
    http_file = parse(sample)
    first, second = http_file.requests
    assert (first.name, first.method, first.expect, first.body) == ("made", "POST", frozenset({200, 201}), '{"a": 1}')
    assert first.headers == [("X-API-Key", "k")]
    assert (second.expect, second.error_code, second.line) == (frozenset({404}), "RUN_NOT_FOUND", 15)
    runner = Runner(http_file, {"baseUrl": "http://h"})
    runner.responses["made"] = httpx.Response(201, json={"data": [{"id": "x"}, {"id": "y"}]})
    assert runner.substitute(second.url) == "http://h/runs/y"
    with pytest.raises(HttpFileError):
        runner.substitute("{{made.response.body.$.data[5].id}}")
    with pytest.raises(HttpFileError):
        runner.substitute("{{undefined}}")


async def test_runner_reports_a_wrong_status_or_error_code(tmp_path: Path) -> None:
    sample = tmp_path / "sample.http"
    sample.write_text(
        "@baseUrl = http://h\n### a\n# expect: 200\nGET {{baseUrl}}/a\n"
        "### b\n# expect: 409 STALE_ATTEMPT\nGET {{baseUrl}}/b\n### c\n# expect: 409 STALE_ATTEMPT\nGET {{baseUrl}}/c\n"
    )

    def answer(request: httpx.Request) -> httpx.Response:
        code = "STALE_ATTEMPT" if request.url.path == "/c" else "INVALID_TRANSITION"
        return httpx.Response(409, json={"error": {"code": code, "message": "", "details": []}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        failures = await Runner(parse(sample), {}).run(http)
    assert len(failures) == 2
    assert "expected 200, got 409" in failures[0]
    assert "expected error code STALE_ATTEMPT, got INVALID_TRANSITION" in failures[1]


def test_a_request_without_an_expected_status_is_refused(tmp_path: Path) -> None:
    sample = tmp_path / "bad.http"
    sample.write_text("### no expectation\nGET http://localhost/health\n")
    with pytest.raises(HttpFileError, match="expect"):
        parse(sample)


def test_http_dir_is_not_a_python_package() -> None:
    assert not list(HTTP_DIR.rglob("*.py")), "http/ must hold no Python: it would shadow the stdlib http package"


def test_stdlib_http_is_not_shadowed() -> None:
    # In this process (pytest puts the repo root on sys.path) and in a fresh interpreter started in the repo root,
    # where '' (the current directory) comes first on sys.path.
    import http.client

    assert HTTP_DIR not in Path(http.client.__file__).resolve().parents
    where = subprocess.run(
        [sys.executable, "-c", "import http.client; print(http.client.__file__)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert HTTP_DIR not in Path(where).resolve().parents
    assert hasattr(http.client, "HTTPConnection")
