"""Measured usage end to end with the real Docker worker (issue 13.3): an attempt's peak and mean CPU and RAM are on
the run, and ``GET /definitions/{name}/usage`` sums up a definition's attempts into a suggested request."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.api_checks import error_of
from tests.dockerimages import PYOP
from tests.simworker import wait_run
from tests.test_worker_docker import TAG, worker  # noqa: F401 - the module's Docker worker fixture
from tests.workerproc import WorkerProcess

pytestmark = pytest.mark.usefixtures("pyop_image")

HELD_MB = 120


async def test_an_attempts_usage_is_measured_and_sums_up_into_a_suggestion(
    http: httpx.AsyncClient,
    worker: WorkerProcess,  # noqa: F811
) -> None:
    name = "hungry-" + uuid.uuid4().hex[:8]
    definition = {
        "name": name, "version": "1.0.0", "image": PYOP, "command": ["ops:hold"], "tags": [TAG],
        "input_specs": {"mb": {"type": "int"}, "seconds": {"type": "float"}},
        "constraints": {"cpu": 1, "ram_mb": 1024},
    }  # fmt: skip
    assert (await http.post("/definitions", json=definition)).status_code == 201
    empty = (await http.get(f"/definitions/{name}/usage")).json()
    assert (empty["attempts"], empty["ram_peak_mb"], empty["suggested"]) == (0, None, {})

    runs = []
    for _ in range(2):
        response = await http.post(f"/definitions/{name}/runs", json={"inputs": {"mb": HELD_MB, "seconds": 3}})
        assert response.status_code == 201, response.text
        runs.append(await wait_run(http, response.json()["id"], 60, state="COMPLETED"))
    for run in runs:
        usage = run["usage"]
        assert usage["samples"] >= 1, usage
        assert HELD_MB * 0.9 <= usage["ram_peak_mb"] <= 1024 and usage["ram_mean_mb"] <= usage["ram_peak_mb"]
        assert 0 < usage["cpu_peak"] <= 1.2  # one busy core, under a 1-core limit
        attempts = (await http.get(f"/runs/{run['id']}/attempts")).json()["data"]
        assert attempts[0]["usage"] == usage

    summary = (await http.get(f"/definitions/{name}/usage")).json()
    assert summary["attempts"] == 2
    assert summary["ram_peak_mb"]["max"] == max(r["usage"]["ram_peak_mb"] for r in runs)
    assert summary["requested"] == {"cpu": 1.0, "ram_mb": 1024, "vram_mb": 0}
    # 20 % over the 95th percentile of the peaks, in 64 MB steps: far below the 1 GB asked for.
    assert summary["ram_peak_mb"]["p95"] * 1.2 <= summary["suggested"]["ram_mb"] < 1024
    assert summary["suggested"]["ram_mb"] % 64 == 0 and "vram_mb" not in summary["suggested"]


async def test_the_usage_of_a_definition_that_does_not_exist_is_404(http: httpx.AsyncClient) -> None:
    error_of(await http.get("/definitions/no-such-op/usage"), 404, "DEFINITION_NOT_FOUND")
