"""The ``process`` runtime (SPEC §6): a real worker runs the op's command as a local subprocess, through the same IO
contract, with no Docker at all. It is documented as not isolated: the op runs as the worker's user on the host.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.simworker import Cluster, all_events, wait_run
from tests.waiting import until
from tests.workerproc import WorkerProcess, unique_worker_name

TAG = "process-e2e"
REPO = Path(__file__).resolve().parent.parent
OPS_DIR = REPO / "tests" / "images" / "pyop"


@pytest.fixture(scope="module")
async def worker(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WorkerProcess]:
    root = tmp_path_factory.mktemp("process-worker")
    process = WorkerProcess(unique_worker_name("proc"), root / "work", cluster.url, runtime="process", tags=(TAG,))
    await process.start(http)
    yield process
    assert process.stop() == 0, process.log()


async def deploy(http: httpx.AsyncClient, op: str, inputs: dict[str, str], **fields: Any) -> str:
    """A definition whose command runs a test op with this interpreter; PYTHONPATH finds ops.py and gyoza.
    ``inputs`` maps each input name to its type."""
    name = f"{op.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    definition = {
        "name": name, "version": "1", "image": "local/process-runtime", "tags": [TAG],
        "command": [sys.executable, "-m", "gyoza.op", f"ops:{op}"],
        "env": {"PYTHONPATH": f"{OPS_DIR}:{REPO}"},
        "input_specs": {key: {"type": type_} for key, type_ in inputs.items()},
        **fields,
    }  # fmt: skip
    response = await http.post("/definitions", json=definition)
    assert response.status_code == 201, response.text
    return name


async def start_run(http: httpx.AsyncClient, name: str, inputs: dict[str, Any]) -> str:
    response = await http.post(f"/definitions/{name}/runs", json={"inputs": inputs})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


async def test_process_runtime_runs_the_command_and_completes(http: httpx.AsyncClient, worker: WorkerProcess) -> None:
    name = await deploy(
        http, "echo", {"text": "string", "n": "int"}, output_specs={"text": {"type": "string"}, "n": {"type": "int"}}
    )
    run_id = await start_run(http, name, {"text": "héllo", "n": 3})
    run = await wait_run(http, run_id, 30, state="COMPLETED")
    assert run["outputs"] == {"text": "héllo", "n": 3}
    assert run["execution_summary"]["worker_id"] == worker.name
    # The directory goes right after the final report, so the run may read COMPLETED a moment before it is gone.
    await until(lambda: not list(worker.work_dir.iterdir()), 10, interval=0.05, what="attempt directory removed")


async def test_process_runtime_forwards_progress(http: httpx.AsyncClient, worker: WorkerProcess) -> None:
    name = await deploy(http, "progress", {"steps": "int", "delay": "float"})
    run_id = await start_run(http, name, {"steps": 4, "delay": 0.01})
    run = await wait_run(http, run_id, 30, state="COMPLETED")
    assert run["outputs"] == {"steps": 4}
    events = await all_events(http, run_id)
    assert [e["msg"] for e in events if e["type"] == "PROGRESS"] == [0, 25, 50, 75, 100]


async def test_process_runtime_failure_carries_stderr_and_logs(http: httpx.AsyncClient, worker: WorkerProcess) -> None:
    message = "no such model " + uuid.uuid4().hex[:6]
    name = await deploy(http, "exit_code", {"code": "int", "message": "string"})
    run_id = await start_run(http, name, {"code": 4, "message": message})
    run = await wait_run(http, run_id, 30, state="FAILED")
    assert run["state_reason"]["code"] == "EXIT_CODE"
    assert message in run["state_reason"]["message"]
    assert run["execution_summary"]["exit_code"] == 4
    logs = await http.get(f"/runs/{run_id}/logs")
    assert message in logs.text


def test_process_runtime_is_documented_as_not_isolated() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "gyoza", "worker", "start", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "no isolation" in " ".join(help_text.split())
    from gyoza.worker.runtimes import process

    assert "NOT isolated" in (process.__doc__ or "")
