"""Secrets end to end with the real Docker worker (issue 12.4): the value reaches the op's environment and nothing
else — not the run, its events, attempts, list entry or stream, and not its captured log, where a careless op's
print of it is masked; a run whose secret was deleted fails saying so, starting nothing."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
import pytest

from tests.dockerimages import PYOP
from tests.simworker import wait_run
from tests.test_worker_docker import TAG, worker  # noqa: F401 - the module's Docker worker fixture
from tests.workerproc import WorkerProcess, run_containers

pytestmark = pytest.mark.usefixtures("pyop_image")


async def every_view_of(http: httpx.AsyncClient, run_id: str) -> str:
    """What any endpoint shows of a finished run, as one text."""
    paths = [f"/runs/{run_id}", f"/runs/{run_id}/events", f"/runs/{run_id}/attempts", f"/runs/{run_id}/logs",
             f"/runs/{run_id}/logs?attempt=1", "/runs?limit=100", f"/runs/{run_id}/stream?timeout=1"]  # fmt: skip
    texts = []
    for path in paths:
        response = await http.get(path)
        assert response.status_code == 200, (path, response.text)
        texts.append(response.text)
    return "\n".join(texts)


async def deploy_leaky(http: httpx.AsyncClient, secret: str) -> str:
    name = "leaky-" + uuid.uuid4().hex[:8]
    body: dict[str, Any] = {
        "name": name, "version": "1.0.0", "image": PYOP, "command": ["ops:leak"], "tags": [TAG],
        "input_specs": {"variable": {"type": "string"}, "code": {"type": "int", "required": False, "default": 0}},
        "secrets": {"DB_PASSWORD": secret},
    }  # fmt: skip
    response = await http.post("/definitions", json=body)
    assert response.status_code == 201, response.text
    return name


async def start(http: httpx.AsyncClient, name: str, **inputs: Any) -> str:
    response = await http.post(f"/definitions/{name}/runs", json={"inputs": {"variable": "DB_PASSWORD", **inputs}})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


async def test_the_op_gets_the_value_and_no_answer_or_log_holds_it(
    http: httpx.AsyncClient,
    worker: WorkerProcess,  # noqa: F811
) -> None:
    secret, value = "db-" + uuid.uuid4().hex[:8], "pw-" + uuid.uuid4().hex
    assert (await http.put(f"/secrets/{secret}", json={"value": value})).status_code == 201
    name = await deploy_leaky(http, secret)

    completed = await wait_run(http, await start(http, name), 60, state="COMPLETED")
    digest = hashlib.sha256(value.encode()).hexdigest()
    assert completed["outputs"] == {"sha256": digest, "length": len(value)}  # the op had the real value
    seen = await every_view_of(http, completed["id"])
    assert value not in seen
    assert "connecting with *** now" in seen and "debug: DB_PASSWORD=***" in seen  # masked, not dropped

    failed = await wait_run(http, await start(http, name, code=2), 60, state="FAILED")
    assert "***" in failed["state_reason"]["message"] and value not in failed["state_reason"]["message"]
    assert value not in await every_view_of(http, failed["id"])


async def test_a_run_whose_secret_was_deleted_fails_naming_it_and_starts_nothing(
    http: httpx.AsyncClient,
    worker: WorkerProcess,  # noqa: F811
) -> None:
    secret = "gone-" + uuid.uuid4().hex[:8]
    assert (await http.put(f"/secrets/{secret}", json={"value": "soon deleted"})).status_code == 201
    name = await deploy_leaky(http, secret)
    assert (await http.delete(f"/secrets/{secret}")).status_code == 204
    run_id = await start(http, name)
    failed = await wait_run(http, run_id, 60, state="FAILED", reason="CONTAINER_ERROR")
    assert secret in failed["state_reason"]["message"] and "DB_PASSWORD" in failed["state_reason"]["message"]
    assert failed["started_at"] is None and not run_containers(run_id)
