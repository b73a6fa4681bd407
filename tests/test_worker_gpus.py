"""GPUs on a real worker (SPEC §5.1, §6): detection through nvidia-smi, and a VRAM run given only its chosen device.

This machine has no GPU, so a fake ``nvidia-smi`` on the worker's PATH reports two. The Docker engine here has no
NVIDIA runtime either, so a container asking for a GPU cannot start: end to end, the honest outcome is FAILED
``CONTAINER_ERROR`` naming the device problem. What the container *would* get is checked below the runtime boundary:
``container_options`` requests exactly the chosen device and the attempt's env carries ``GYOZA_GPU_IDS``.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gyoza.schema import Assignment, Constraints, PullCredential
from gyoza.worker.attempt import AttemptRunner
from gyoza.worker.runtimes.base import LaunchFailed, LaunchSpec, LogCapture
from gyoza.worker.runtimes.docker import container_options
from gyoza.worker.settings import WorkerSettings
from tests.dockerimages import PYOP
from tests.simworker import Cluster, wait_run
from tests.waiting import until
from tests.workerproc import WorkerProcess, remove_leftover_containers, run_containers, unique_worker_name

# The Docker images are checked before the module's cluster starts (skip, or fail under GYOZA_REQUIRE_DOCKER=1).
pytestmark = pytest.mark.usefixtures("pyop_image")

TAG = "gpu-e2e"
# GPU 1 is the smaller one: best fit must pick it for a 20 GB request, although index order would pick GPU 0.
FAKE_NVIDIA_SMI = """#!/bin/sh
echo "0, GPU-aaaa, NVIDIA A100, 40960"
echo "1, GPU-bbbb, NVIDIA A100, 24576"
"""


@pytest.fixture(scope="module")
async def gpu_worker(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WorkerProcess]:
    root = tmp_path_factory.mktemp("gpu-worker")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    path = f"{bin_dir}:{os.environ.get('PATH', '')}"
    name = unique_worker_name("gpu")
    worker = WorkerProcess(name, root / "work", cluster.url, tags=(TAG,), gpus="auto", env={"PATH": path})
    await worker.start(http)
    yield worker
    worker.stop()
    leftovers = remove_leftover_containers(name)
    assert not leftovers, f"containers left behind by worker {name}: {leftovers}"


async def test_worker_reports_the_gpus_nvidia_smi_lists(http: httpx.AsyncClient, gpu_worker: WorkerProcess) -> None:
    response = await http.get(f"/workers/{gpu_worker.name}")
    assert response.status_code == 200
    gpus = {g["index"]: g for g in response.json()["gpus"]}
    assert sorted(gpus) == [0, 1]
    assert (gpus[0]["uuid"], gpus[0]["name"], gpus[0]["vram_mb"]) == ("GPU-aaaa", "NVIDIA A100", 40960)
    assert (gpus[1]["uuid"], gpus[1]["vram_mb"]) == ("GPU-bbbb", 24576)


async def test_vram_run_gets_only_its_device_and_fails_honestly_without_nvidia_runtime(
    http: httpx.AsyncClient, gpu_worker: WorkerProcess
) -> None:
    body = {"image": PYOP, "command": ["ops:gpu"], "inputs": {}, "tags": [TAG], "constraints": {"vram_mb": 20000}}
    response = await http.post("/runs", json=body)
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]

    run = await wait_run(http, run_id, 30, state="FAILED")
    assert run["worker_id"] == gpu_worker.name
    assert run["gpu_ids"] == [1], "best fit: the smaller GPU that still has 20 GB"
    assert run["execution_summary"]["gpu_ids"] == [1]
    assigned = [e["payload"] for e in run["events"] if e["type"] == "ASSIGNED"]
    assert assigned == [{"worker_id": gpu_worker.name, "gpu_ids": [1]}]
    assert run["state_reason"]["code"] == "CONTAINER_ERROR"
    # The engine refuses the device request (no NVIDIA runtime): the reason says so instead of a generic failure.
    assert re.search(r"device driver|gpu", run["state_reason"]["message"], re.IGNORECASE), run["state_reason"]
    # A container that could not start is not left behind in the engine.
    await until(lambda: not run_containers(run_id), 10, interval=0.1, what="unstartable container removed")


# --- below the runtime boundary: what the container would be given -------------------------------------------------


class RecordingRuntime:
    """Records the launch spec, then fails the way an engine without a GPU runtime does."""

    def __init__(self) -> None:
        self.specs: list[LaunchSpec] = []

    async def ensure_image(self, image: str, login: PullCredential | None = None) -> None:
        return None

    async def launch(self, spec: LaunchSpec, logs: LogCapture) -> Any:
        self.specs.append(spec)
        raise LaunchFailed("could not select device driver")

    async def images(self) -> list[str]:
        return []

    async def orphans(self, worker_id: str, work_dir: Path) -> list[Any]:
        return []


class RecordingClient:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    async def post_event(self, run_id: str, event: Any) -> None:
        self.events.append((run_id, event))

    async def upload_logs(self, run_id: str, attempt: int, text: bytes, worker_id: str) -> None:
        return None


async def test_attempt_asks_for_exactly_the_assigned_gpus(tmp_path: Path) -> None:
    assignment = Assignment(
        run_id="r-gpu", attempt=2, image="img", command=["ops:gpu"], inputs={}, env={"MODEL": "m"},
        constraints=Constraints(vram_mb=20000), gpu_ids=[1], timeout_seconds=None, op_definition="op",
        definition_version="1", output_specs=None,
    )  # fmt: skip
    settings = WorkerSettings(work_dir=tmp_path, name="w-gpu", stop_grace=1, log_limit=1024, runtime="docker")
    runtime, client = RecordingRuntime(), RecordingClient()
    await AttemptRunner(assignment, settings, client, runtime).run()  # type: ignore[arg-type]

    [spec] = runtime.specs
    assert spec.gpu_ids == [1]
    assert spec.env["GYOZA_GPU_IDS"] == "1"
    assert spec.env["MODEL"] == "m" and spec.env["GYOZA_ATTEMPT"] == "2"
    options = container_options(spec, "none")
    [request] = options["device_requests"]
    assert request["DeviceIDs"] == ["1"], "only the chosen device, never all GPUs"
    assert request["Capabilities"] == [["gpu"]]
    assert request.get("Count") in (None, 0), "a device list, not a count (a count could pick any GPU)"
    assert options["environment"]["GYOZA_GPU_IDS"] == "1"
    assert options["network_mode"] == "none" and options["privileged"] is False and options["init"] is True
    [(_, failed)] = client.events
    assert (failed.type, failed.payload["reason"]) == ("FAILED", "CONTAINER_ERROR")


def test_container_options_without_gpus_request_no_devices(tmp_path: Path) -> None:
    spec = LaunchSpec(
        run_id="r", attempt=1, worker_id="w", image="img", command=None, env={}, cpu=1.5, ram_mb=64, gpu_ids=[],
        io_dir=tmp_path,
    )  # fmt: skip
    options = container_options(spec, "none")
    assert "device_requests" not in options
    assert options["nano_cpus"] == 1_500_000_000
    assert options["mem_limit"] == options["memswap_limit"] == "64m", "no swap: going over is an OOM kill"
    assert options["labels"] == {"gyoza.run_id": "r", "gyoza.attempt": "1", "gyoza.worker_id": "w"}
    assert options["volumes"] == {str(tmp_path): {"bind": "/gyoza", "mode": "rw"}}
