"""A small parser and runner for the ``http/*.http`` request files (the VS Code REST Client / JetBrains subset).

What it understands, and all the files may use:
- ``@name = value`` file variables, ``{{name}}`` substitution (values may refer to other variables);
- requests separated by lines starting with ``###``;
- ``# @name requestName`` to name a request and ``{{requestName.response.body.$.a.b[0]}}`` to use its response
  (REST Client's syntax), plus ``.response.headers.Name``;
- ``# expect: 201`` or ``# expect: 200|201`` before a request: the statuses the runner accepts, optionally followed
  by the error code the body must carry (``# expect: 409 STALE_ATTEMPT``);
- the request line ``METHOD URL [HTTP/1.1]``, header lines until a blank line, then the body until the next ``###``.
Lines starting with ``#`` or ``//`` before the request line are comments.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_VARIABLE = re.compile(r"^@([A-Za-z_][\w.-]*)\s*=\s*(.*?)\s*$")
_NAME = re.compile(r"^(?:#|//)\s*@name\s*=?\s*(\S+)\s*$")
_EXPECT = re.compile(r"^(?:#|//)\s*expect:\s*(\d{3}(?:\s*\|\s*\d{3})*)(?:\s+([A-Z][A-Z0-9_]*))?\s*$")
_REQUEST_LINE = re.compile(rf"^({'|'.join(METHODS)})\s+(\S+)(?:\s+HTTP/[\d.]+)?\s*$")
_REFERENCE = re.compile(r"\{\{\s*([^{}\s]+?)\s*\}\}")


class HttpFileError(Exception):
    """The file breaks the format, or a request cannot be built (unknown variable, missing response)."""


@dataclass
class HttpRequest:
    line: int  # 1-based line of the request line, for error messages
    method: str
    url: str
    expect: frozenset[int]
    name: str | None = None
    error_code: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""

    def label(self, path: Path) -> str:
        return f"{path.name}:{self.line} {self.name or ''} {self.method} {self.url}".replace("  ", " ")


@dataclass
class HttpFile:
    path: Path
    variables: dict[str, str]
    requests: list[HttpRequest]


def parse(path: Path) -> HttpFile:
    lines = path.read_text(encoding="utf-8").splitlines()
    variables: dict[str, str] = {}
    requests: list[HttpRequest] = []
    block: list[tuple[int, str]] = []
    for number, text in enumerate([*lines, "###"], start=1):
        if text.startswith("###"):
            request = _parse_block(path, block, variables)
            if request is not None:
                requests.append(request)
            block = []
        else:
            block.append((number, text))
    return HttpFile(path, variables, requests)


def _parse_block(path: Path, block: list[tuple[int, str]], variables: dict[str, str]) -> HttpRequest | None:
    name: str | None = None
    expect: frozenset[int] | None = None
    error_code: str | None = None
    for index, (number, text) in enumerate(block):
        stripped = text.strip()
        if match := _VARIABLE.match(stripped):
            variables[match[1]] = match[2]
        elif match := _NAME.match(stripped):
            name = match[1]
        elif match := _EXPECT.match(stripped):
            expect = frozenset(int(s) for s in match[1].split("|"))
            error_code = match[2]
        elif not stripped or stripped.startswith(("#", "//")):
            continue
        elif match := _REQUEST_LINE.match(stripped):
            if expect is None:
                raise HttpFileError(f"{path.name}:{number}: request without a '# expect: <status>' line")
            request = HttpRequest(number, match[1], match[2], expect, name, error_code)
            _parse_rest(request, [t for _, t in block[index + 1 :]])
            return request
        else:
            raise HttpFileError(f"{path.name}:{number}: expected a request line, got {text!r}")
    if name is not None or expect is not None:
        raise HttpFileError(f"{path.name}: request {name or ''} has no request line")
    return None


def _parse_rest(request: HttpRequest, rest: list[str]) -> None:
    """Headers until the first blank line, then the body (trailing blank lines dropped)."""
    for index, text in enumerate(rest):
        if not text.strip():
            request.body = "\n".join(rest[index + 1 :]).strip()
            return
        header, sep, value = text.partition(":")
        if not sep:
            raise HttpFileError(f"line {request.line}: bad header line {text!r}")
        request.headers.append((header.strip(), value.strip()))


class Runner:
    """Sends the requests of one file in order, remembering the responses of named requests."""

    def __init__(self, http_file: HttpFile, overrides: dict[str, str], placeholders: bool = False) -> None:
        self.file = http_file
        self.variables = {**http_file.variables, **overrides}
        self.responses: dict[str, httpx.Response] = {}
        # Without sending: a response reference of a named request of this file becomes a placeholder.
        self.placeholders = placeholders
        self.names = {r.name for r in http_file.requests if r.name}

    async def run(self, http: httpx.AsyncClient) -> list[str]:
        """Run every request; returns one message per request whose status or error code was not expected.

        A request that cannot be built (it refers to a failed response) ends the run after the failures so far.
        """
        failures: list[str] = []
        for request in self.file.requests:
            try:
                url = self.substitute(request.url)
                headers = [(k, self.substitute(v)) for k, v in request.headers]
                body = self.substitute(request.body).encode()
            except HttpFileError as exc:
                return [*failures, f"{request.label(self.file.path)}: {exc}"]
            response = await http.request(request.method, url, headers=headers, content=body or None)
            if request.name:
                self.responses[request.name] = response
            problem = _mismatch(request, response)
            if problem:
                failures.append(f"{request.label(self.file.path)}: {problem}: {response.text[:500]}")
        return failures

    def substitute(self, text: str, depth: int = 0) -> str:
        if depth > 10:
            raise HttpFileError(f"variables refer to each other in a loop: {text!r}")
        result = _REFERENCE.sub(lambda m: self._resolve(m[1]), text)
        return self.substitute(result, depth + 1) if _REFERENCE.search(result) else result

    def _resolve(self, reference: str) -> str:
        if reference in self.variables:
            return self.variables[reference]
        head, _, rest = reference.partition(".response.")
        if self.placeholders and head in self.names:
            return "placeholder"
        if head not in self.responses:
            raise HttpFileError(f"{self.file.path.name}: unknown variable or unsent request {reference!r}")
        response = self.responses[head]
        part, _, selector = rest.partition(".")
        if part == "headers" and selector in response.headers:
            return response.headers[selector]
        if part == "body" and selector == "*":
            return response.text
        if part == "body":
            return _stringify(json_path(response.json(), selector))
        raise HttpFileError(f"{self.file.path.name}: cannot resolve {reference!r}")


def _mismatch(request: HttpRequest, response: httpx.Response) -> str | None:
    expected = "|".join(str(s) for s in sorted(request.expect))
    if response.status_code not in request.expect:
        return f"expected {expected}, got {response.status_code}"
    if request.error_code is None:
        return None
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    return None if code == request.error_code else f"expected error code {request.error_code}, got {code}"


def json_path(document: Any, path: str) -> Any:
    """``$.a.b[0]`` lookup; a missing key or index is an error (a chained request would send garbage)."""
    if not path.startswith("$"):
        raise HttpFileError(f"JSONPath must start with '$': {path!r}")
    value = document
    for key, index in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path[1:]):
        try:
            value = value[int(index)] if index else value[key]
        except (KeyError, IndexError, TypeError):
            raise HttpFileError(f"{path!r} not found in {json.dumps(document)[:300]}") from None
    return value


def _stringify(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def request_targets(http_file: HttpFile) -> list[tuple[HttpRequest, str]]:
    """(request, URL path) for each request without sending anything: response references become placeholders,
    so the coverage of the files is known before any request runs."""
    runner = Runner(http_file, {"baseUrl": "http://gyoza.invalid"}, placeholders=True)
    return [(request, httpx.URL(runner.substitute(request.url)).path) for request in http_file.requests]
