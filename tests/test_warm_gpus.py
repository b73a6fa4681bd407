"""Warm instances on GPUs (issue 13.1): an idle instance holds its GPU's VRAM only while nobody else needs it.

A real worker with the process runtime (the Docker engine here has no NVIDIA runtime, so containers cannot get a
GPU) and a fake ``nvidia-smi`` reporting two A100s. An idle instance of a warm definition sits on GPU 0; a run of
another op that needs GPU 0's VRAM is placed there anyway (idle warmth reserves nothing) and the worker stops the
idle instance to make room, before starting it.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.processes import pid_alive
from tests.simworker import Cluster, wait_run
from tests.test_worker_gpus import FAKE_NVIDIA_SMI
from tests.test_worker_process_runtime import OPS_DIR, REPO
from tests.waiting import until
from tests.workerproc import WorkerProcess, unique_worker_name

TAG = "warm-gpu-e2e"


@pytest.fixture(scope="module")
async def worker(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WorkerProcess]:
    root = tmp_path_factory.mktemp("warm-gpu-worker")
    (root / "bin").mkdir()
    (root / "bin" / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (root / "bin" / "nvidia-smi").chmod(0o755)
    env = {"PATH": f"{root / 'bin'}:{os.environ.get('PATH', '')}"}
    process = WorkerProcess(unique_worker_name("warmgpu"), root / "work", cluster.url, runtime="process", tags=(TAG,),
                            gpus="auto", env=env)  # fmt: skip
    await process.start(http)
    yield process
    assert process.stop() == 0, process.log()


def op_body(op: str, **fields: Any) -> dict[str, Any]:
    return {"image": "local/process-runtime", "tags": [TAG], "command": [sys.executable, "-m", "gyoza.op", f"ops:{op}"],
            "env": {"PYTHONPATH": f"{OPS_DIR}:{REPO}"}, **fields}  # fmt: skip


async def test_an_idle_instance_gives_its_gpu_to_a_run_that_needs_it(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    name = "warm-gpu-" + uuid.uuid4().hex[:8]
    big = {"vram_mb": 30000}  # only GPU 0 (40 GB) holds it
    deployed = await http.post("/definitions", json={"name": name, "version": "1", "keep_warm_seconds": 600,
                                                     **op_body("warm", constraints=big)})  # fmt: skip
    assert deployed.status_code == 201, deployed.text
    first = await wait_run(http, (await http.post(f"/definitions/{name}/runs", json={})).json()["id"], 30,
                           state="COMPLETED")  # fmt: skip
    assert first["gpu_ids"] == [0]
    instance_pid = first["outputs"]["pid"]

    async def idle_on_gpu_0() -> bool:
        view = (await http.get(f"/workers/{worker.name}")).json()
        return [(i["gpu_ids"], i["vram_mb"], i["busy"]) for i in view["warm"]] == [([0], 30000, False)]

    await until(idle_on_gpu_0, 15, what="the idle instance on GPU 0 in GET /workers")
    assert pid_alive(instance_pid)

    other = await http.post("/runs", json={**op_body("gpu", constraints=big), "inputs": {}})
    run = await wait_run(http, other.json()["id"], 30, state="COMPLETED")
    assert run["gpu_ids"] == [0] and run["outputs"]["gyoza_gpu_ids"] == "0"
    assert not pid_alive(instance_pid)  # stopped to make room before the other op started
    again = await wait_run(http, (await http.post(f"/definitions/{name}/runs", json={})).json()["id"], 30,
                           state="COMPLETED")  # fmt: skip
    assert again["outputs"]["pid"] != instance_pid and again["outputs"]["served"] == 1
