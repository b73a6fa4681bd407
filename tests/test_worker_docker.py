"""The real worker with the Docker runtime, end to end (SPEC §6-7): a private server, one `gyoza worker start`
process (network none), and the pyop test image. Each test submits runs over HTTP and watches what a user sees:
state, progress, outputs, reasons, logs, and that no container outlives its attempt.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dockerimages import BUSYBOX, PYOP, require_images
from tests.simworker import Cluster, all_events, get_run, wait_run
from tests.waiting import until
from tests.workerproc import WorkerProcess, remove_leftover_containers, run_containers, unique_worker_name

# The Docker images are checked before the module's cluster starts (skip, or fail under GYOZA_REQUIRE_DOCKER=1).
pytestmark = pytest.mark.usefixtures("pyop_image")

TAG = "docker-e2e"
STOP_GRACE_S = 2.0
HEARTBEAT_S = 0.5


@pytest.fixture(scope="module")
async def worker(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WorkerProcess]:
    root = tmp_path_factory.mktemp("docker-worker")
    name = unique_worker_name("docker")
    process = WorkerProcess(name, root / "work", cluster.url, tags=(TAG,), stop_grace=STOP_GRACE_S)
    await process.start(http)
    yield process
    process.stop()
    # Every attempt removes its container; anything left here is a leak, cleaned up but reported as a failure.
    leftovers = remove_leftover_containers(name)
    assert not leftovers, f"containers left behind by worker {name}: {leftovers}"


async def submit(http: httpx.AsyncClient, command: list[str], inputs: dict[str, Any], **fields: Any) -> str:
    body = {"image": PYOP, "command": command, "inputs": inputs, "tags": [TAG], **fields}
    response = await http.post("/runs", json=body)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


async def containers_gone(run_id: str) -> None:
    await until(lambda: not run_containers(run_id), 10, interval=0.1, what=f"containers of run {run_id} removed")


def attempt_dirs(worker: WorkerProcess) -> list[Path]:
    return list(worker.work_dir.iterdir())


async def test_deployed_python_op_reports_live_progress_and_completes(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    name = "progress-" + uuid.uuid4().hex[:8]
    definition = {
        "name": name, "version": "1.0.0", "image": PYOP, "command": ["ops:progress"], "tags": [TAG],
        "input_specs": {"steps": {"type": "int"}, "delay": {"type": "float"}},
        "output_specs": {"steps": {"type": "int"}},
    }  # fmt: skip
    assert (await http.post("/definitions", json=definition)).status_code == 201
    # 5 steps 0.6 s apart: ~3 s of RUNNING, so polling every 50 ms sees several intermediate values.
    response = await http.post(f"/definitions/{name}/runs", json={"inputs": {"steps": 5, "delay": 0.6}})
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]

    seen_while_running: set[int] = set()

    async def finished() -> dict[str, Any] | None:
        run = await get_run(http, run_id)
        if run["state"] == "RUNNING" and 0 < run["progress"] < 100:
            seen_while_running.add(run["progress"])
        return run if run["state"] in ("COMPLETED", "FAILED", "CANCELLED") else None

    run = await until(finished, 30, interval=0.05, what="progress run finished")
    assert run["state"] == "COMPLETED", run["state_reason"]
    assert len(seen_while_running) >= 2, f"progress was not live: saw {seen_while_running} while RUNNING"
    assert run["outputs"] == {"steps": 5}
    assert run["progress"] == 100
    assert run["execution_summary"]["exit_code"] == 0
    assert run["execution_summary"]["worker_id"] == worker.name

    events = await all_events(http, run_id)
    progress = [e["msg"] for e in events if e["type"] == "PROGRESS"]
    assert progress == [0, 20, 40, 60, 80, 100], "every progress line is forwarded, in order"
    assert [e["msg"] for e in events if e["type"] == "INFO"][-5:] == [f"step {n}/5" for n in range(1, 6)]
    types = [e["type"] for e in events]
    assert types.index("STARTED") < types.index("PROGRESS") < types.index("COMPLETED")

    logs = await http.get(f"/runs/{run_id}/logs")
    assert logs.status_code == 200
    assert logs.headers["content-type"].startswith("text/plain")
    await containers_gone(run_id)
    await until(lambda: not attempt_dirs(worker), 5, what="attempt directory removed")


async def test_non_zero_exit_fails_with_the_stderr_tail_and_logs(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    message = "disk on fire " + uuid.uuid4().hex[:6]
    run_id = await submit(http, ["ops:exit_code"], {"code": 3, "message": message})
    run = await wait_run(http, run_id, 30, state="FAILED")
    assert run["state_reason"]["code"] == "EXIT_CODE"
    assert message in run["state_reason"]["message"]
    assert message in run["execution_summary"]["error_message"]
    assert run["execution_summary"]["exit_code"] == 3
    logs = await http.get(f"/runs/{run_id}/logs")
    assert logs.status_code == 200
    assert message in logs.text, "the op's stderr is in the captured logs"
    await containers_gone(run_id)


async def test_cancel_stops_the_container_within_grace_and_heartbeat(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    run_id = await submit(http, ["ops:sleep"], {"seconds": 120})
    await wait_run(http, run_id, 30, state="RUNNING")
    assert run_containers(run_id), "the op runs in a container labelled with its run id"

    asked = time.monotonic()
    assert (await http.post(f"/runs/{run_id}/cancel")).status_code == 200
    # The cancel reaches the worker on the next heartbeat reply; then SIGTERM, and a kill after the grace period.
    budget = STOP_GRACE_S + HEARTBEAT_S + 3.0
    run = await wait_run(http, run_id, budget, state="CANCELLED")
    assert time.monotonic() - asked <= budget
    assert run["state_reason"]["code"] == "USER"
    await until(lambda: not run_containers(run_id), budget, interval=0.1, what="cancelled container removed")


async def test_timeout_fails_the_attempt_and_removes_the_container(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    run_id = await submit(http, ["ops:sleep"], {"seconds": 120}, timeout_seconds=1)
    run = await wait_run(http, run_id, 30, state="FAILED")
    assert run["state_reason"]["code"] == "TIMEOUT"
    await containers_gone(run_id)


async def test_allocating_past_ram_mb_is_oom_killed(http: httpx.AsyncClient, worker: WorkerProcess) -> None:
    run_id = await submit(http, ["ops:oom"], {"chunk_mb": 16, "max_mb": 1024}, constraints={"ram_mb": 64})
    run = await wait_run(http, run_id, 30, state="FAILED")
    assert run["state_reason"]["code"] == "OOM_KILLED", run["state_reason"]
    await containers_gone(run_id)


async def test_missing_image_fails_with_image_not_found(http: httpx.AsyncClient, worker: WorkerProcess) -> None:
    image = f"gyoza-test/does-not-exist-{uuid.uuid4().hex[:8]}:latest"
    run_id = await submit(http, ["ops:echo"], {}, image=image)
    run = await wait_run(http, run_id, 60, state="FAILED")
    assert run["state_reason"]["code"] == "IMAGE_NOT_FOUND"
    assert image in run["state_reason"]["message"]
    assert not run_containers(run_id)


async def test_outputs_breaking_the_spec_fail_with_output_invalid(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    run_id = await submit(http, ["ops:bad_outputs"], {}, output_specs={"score": {"type": "float"}})
    run = await wait_run(http, run_id, 30, state="FAILED")
    assert run["state_reason"]["code"] == "OUTPUT_INVALID"
    assert "score" in run["state_reason"]["message"], "the message names the offending output"
    assert run["outputs"] == {}
    await containers_gone(run_id)


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (stdout|stderr) (.*)$")


async def test_every_byte_of_many_short_lived_containers_reaches_their_logs(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    """Containers that exit at once, many at a time (load): each run's logs hold all it wrote, stamped, by stream."""
    require_images(BUSYBOX)
    script = "echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2; printf last"
    body = {"image": BUSYBOX, "command": ["sh", "-c", script], "inputs": {}, "tags": [TAG]}
    responses = await asyncio.gather(*(http.post("/runs", json=body) for _ in range(12)))
    runs = [response.json()["id"] for response in responses]
    for run_id in runs:
        await wait_run(http, run_id, 60, state="COMPLETED")
        text = (await http.get(f"/runs/{run_id}/logs")).text
        matches = [LOG_LINE.match(line) for line in text.splitlines()]
        assert all(matches), f"run {run_id}: unmarked lines in {text!r}"
        by_stream = {stream: [m[2] for m in matches if m and m[1] == stream] for stream in ("stdout", "stderr")}
        assert by_stream == {"stdout": ["out-1", "out-2", "last"], "stderr": ["err-1", "err-2"]}, f"run {run_id}"
    for run_id in runs:
        await containers_gone(run_id)
