"""Hostile input, always (issue 12 item 6): a property-based fuzz of the whole OpenAPI against a live server.

Schemathesis reads ``/openapi.json`` from a real server (over HTTP) and sends every operation generated
requests, with the API key: valid ones (positive) and ones that break the documented schema (negative). Each answer
must not be a 5xx, must use a status the operation documents, and must match the schema documented for that status.
The examples are derandomized (the same requests on every run) and bounded per operation and mode, so the test takes
a couple of minutes on a small box. Every failure of every operation is collected and reported together.

(Schemathesis' own pytest integration is not used: its lazy loader breaks on pytest 9. Driving the strategies with
Hypothesis directly is its documented Python API.)
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import hypothesis.errors
import pytest
from schemathesis import GenerationMode, checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Err, Ok
from schemathesis.openapi import from_url

from tests.processes import API_KEY, GyozaServer
from tests.test_api_definitions import NO_WORKER_TAG

EXAMPLES = 40  # per operation and mode
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,  # input that breaks the documented schema gets a 4xx
]
# The answers that refuse input here (SPEC §4): schemathesis' default list lacks 413 (an oversized body).
REFUSALS = [400, 401, 404, 405, 409, 413, 415]
MAX_REPORT_CHARS = 3000  # a failure's report can quote a megabyte body
# Operations left out, each with why. Their own tests cover them.
EXCLUDED = {
    # Server-Sent Event streams stay open until the client leaves: every generated request would hang to the
    # request timeout. (tests/test_streams.py.)
    ("GET", "/runs/{run_id}/stream"),
    ("GET", "/topics/{topic}/stream"),
}
# ``?wait=`` (run creation, worker claim) holds the answer back for up to a minute: a generated wait that the server
# accepts is cut to this, so the operations are fuzzed without each example waiting its full time.
SHORT_WAIT_S = 0.2


def short_wait(case: Any) -> Any:
    wait = (case.query or {}).get("wait")
    if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > SHORT_WAIT_S:
        case.query["wait"] = SHORT_WAIT_S
    return case


def fuzz(operation: Any, mode: GenerationMode, known: dict[str, str], calls: Counter[str]) -> str | None:
    """Run ``EXAMPLES`` generated cases, with the path parameters in ``known`` fixed; the first failure (after
    shrinking) as text, or None."""
    if mode is GenerationMode.NEGATIVE and not len(operation.body) and not len(operation.query):
        # Only path parameters, and any text is a valid one: Hypothesis would search for a second or more (each
        # time) before giving up with Unsatisfiable.
        return None
    fixed = {name: value for name, value in known.items() if "{" + name + "}" in operation.path}
    label = f"{operation.method.upper()} {operation.path} [{mode.value}{', ' + str(fixed) if fixed else ''}]"
    # The key is part of every generated request (not added afterwards), so a negative case never counts "no key"
    # as the input it broke.
    cases = operation.as_strategy(
        generation_mode=mode, headers={"X-API-Key": API_KEY}, path_parameters=fixed or None
    ).map(short_wait)

    @hypothesis.settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=cases)
    def check(case: Any) -> None:
        calls[label] += 1
        case.call_and_validate(checks=CHECKS, timeout=15)

    try:
        check()
    except hypothesis.errors.Unsatisfiable:  # negative mode on an operation that takes no input: nothing to break
        return None
    except (Exception, BaseExceptionGroup) as exc:  # failed checks (a FailureGroup): reported with the others
        return f"{label}: {str(exc)[:MAX_REPORT_CHARS]}"
    return None


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GyozaServer]:
    """A server of its own (on its own embedded NATS): the fuzz leaves thousands of odd runs and definitions behind,
    which no other test's workers or listings should meet."""
    server = GyozaServer(tmp_path_factory.mktemp("fuzz"), None).start()
    yield server
    server.stop()


def real_resources(server: GyozaServer) -> dict[str, str]:
    """A definition and a run that exist (the run waits on a tag no worker has), so that operations on one resource
    are fuzzed past their 404 too."""
    name = "fuzz-" + uuid.uuid4().hex[:8]
    with httpx.Client(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=30) as http:
        deployed = http.post("/definitions", json={"name": name, "version": "1", "image": "alpine:3"})
        assert deployed.status_code == 201, deployed.text
        run = http.post("/runs", json={"image": "alpine:3", "tags": [NO_WORKER_TAG]})
        assert run.status_code == 201, run.text
    return {"name": name, "run_id": run.json()["id"]}


# 3,500 requests take 1-3 minutes on a 2-core box. The suite's 120 s limit would fire inside a Hypothesis example, which
# Hypothesis reports as a flaky failure of whatever operation was running, so this test has a limit of its own.
@pytest.mark.timeout(600)
def test_every_operation_survives_generated_input(fuzzed_server: GyozaServer) -> None:
    server = fuzzed_server
    config = {"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}}
    schema = from_url(server.url + "/openapi.json", config=SchemathesisConfig.from_dict(config))
    schema.config.base_url = server.url
    results = list(schema.get_all_operations())
    assert not [result.err() for result in results if isinstance(result, Err)], "the description is valid"
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert {(op.method.upper(), op.path) for op in operations} >= EXCLUDED, "an exclusion names no operation"
    fuzzed = [op for op in operations if (op.method.upper(), op.path) not in EXCLUDED]
    assert len(fuzzed) >= 30, "the whole API is fuzzed"
    # First with every path parameter generated (mostly unknown ids: 400/404), then, for operations on a run or a
    # definition, with a real one.
    known = real_resources(server)
    passes = [(op, {}) for op in fuzzed] + [
        (op, known) for op in fuzzed if "{run_id}" in op.path or "{name}" in op.path
    ]
    calls: Counter[str] = Counter()
    failures = [
        failure
        for operation, fixed in passes
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if (failure := fuzz(operation, mode, fixed, calls)) is not None
    ]
    print(f"\n{sum(calls.values())} requests in {len(calls)} operation passes")
    assert not failures, "\n\n".join(failures)
