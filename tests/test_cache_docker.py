"""A definition's cache with the real Docker worker (issue 13.1): ``/gyoza/cache`` is the same directory for every run
of the definition on a worker and keeps what one run left there for the next (model weights, downloads); another
definition gets its own, and an ad hoc run none."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.dockerimages import PYOP
from tests.simworker import wait_run
from tests.test_worker_docker import TAG, worker  # noqa: F401 - the module's Docker worker fixture
from tests.workerproc import WorkerProcess

pytestmark = pytest.mark.usefixtures("pyop_image")


async def deploy(http: httpx.AsyncClient) -> str:
    name = "cached-" + uuid.uuid4().hex[:8]
    body = {"name": name, "version": "1.0.0", "image": PYOP, "command": ["ops:remember"], "tags": [TAG],
            "input_specs": {"note": {"type": "string"}}}  # fmt: skip
    assert (await http.post("/definitions", json=body)).status_code == 201
    return name


async def remember(http: httpx.AsyncClient, name: str, note: str) -> dict[str, Any]:
    response = await http.post(f"/definitions/{name}/runs", json={"inputs": {"note": note}})
    assert response.status_code == 201, response.text
    outputs: dict[str, Any] = (await wait_run(http, response.json()["id"], 60, state="COMPLETED"))["outputs"]
    return outputs


async def test_a_definitions_cache_outlives_its_runs_and_is_its_own(
    http: httpx.AsyncClient,
    worker: WorkerProcess,  # noqa: F811
) -> None:
    name, other = await deploy(http), await deploy(http)
    assert await remember(http, name, "weights v1") == {"previous": None, "cache": "/gyoza/cache"}
    assert (await remember(http, name, "weights v2"))["previous"] == "weights v1"
    assert (await remember(http, other, "mine"))["previous"] is None  # another definition: another directory
    assert (worker.work_dir.parent / "cache" / name / "note.txt").read_text() == "weights v2"

    adhoc = await http.post("/runs", json={"image": PYOP, "command": ["ops:remember"], "inputs": {"note": "x"},
                                           "tags": [TAG]})  # fmt: skip
    done = await wait_run(http, adhoc.json()["id"], 60, state="COMPLETED")
    assert done["outputs"] == {"previous": None, "cache": None}
