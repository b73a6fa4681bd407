"""The ``process`` runtime (SPEC §6): a real worker runs the op's command as a local subprocess, through the same IO
contract, with no Docker at all. It is documented as not isolated: the op runs as the worker's user on the host.
Yet an op and everything it starts end with its attempt and with its worker, however it handles SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import pid_alive
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


async def submit(http: httpx.AsyncClient, command: list[str], tag: str = TAG, **fields: Any) -> str:
    body = {"image": "local/process-runtime", "command": command, "inputs": {}, "tags": [tag], **fields}
    response = await http.post("/runs", json=body)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


async def test_outputs_too_large_for_a_report_fail_at_once_with_the_reason(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    outputs = "os.environ['GYOZA_IO_DIR'] + '/outputs.json'"
    write = f"import json, os; json.dump({{'blob': 'x' * 1_500_000}}, open({outputs}, 'w'))"
    run_id = await submit(http, [sys.executable, "-c", write], retry_policy={"max_attempts": 1})
    run = await wait_run(http, run_id, 15, state="FAILED")
    assert run["state_reason"]["code"] == "OUTPUT_TOO_LARGE"
    assert "1,500,011 bytes" in run["state_reason"]["message"] and "1,048,576" in run["state_reason"]["message"]
    assert run["current_attempt"] == 1, "not retried as if the worker had died"


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (stdout|stderr) (.*)$")


def marked_lines(text: str) -> list[tuple[str, str]]:
    """The logs' lines as (stream, text), each checked to carry its timestamp and stream."""
    matches = [LOG_LINE.match(line) for line in text.splitlines()]
    assert all(matches), f"unmarked log lines in {text!r}"
    return [(m[1], m[2]) for m in matches if m]


async def test_every_line_of_many_quick_ops_reaches_their_logs_stamped_by_stream(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    script = "echo out-$GYOZA_RUN_ID; echo err-$GYOZA_RUN_ID >&2; printf no-newline"
    runs = await asyncio.gather(*(submit(http, ["/bin/sh", "-c", script]) for _ in range(8)))
    for run_id in runs:
        await wait_run(http, run_id, 30, state="COMPLETED")
        logs = (await http.get(f"/runs/{run_id}/logs")).text
        lines = marked_lines(logs)
        expected = [("stderr", f"err-{run_id}"), ("stdout", f"out-{run_id}"), ("stdout", "no-newline")]
        assert sorted(lines) == sorted(expected), f"run {run_id}"


async def test_the_end_of_the_op_ends_what_it_left_running(http: httpx.AsyncClient, worker: WorkerProcess) -> None:
    # The background sleep keeps the op's stdout open: the attempt must still end when the op's main process does.
    run_id = await submit(http, ["/bin/sh", "-c", "sleep 600 & echo started"])
    await wait_run(http, run_id, 15, state="COMPLETED")
    assert ("stdout", "started") in marked_lines((await http.get(f"/runs/{run_id}/logs")).text)


# An op that ignores SIGTERM and starts a child that ignores it too; both pids go to the file named in PIDS_FILE.
STUBBORN_OP = """
import json, os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.environ["PIDS_FILE"], "w") as pids:
    json.dump([os.getpid(), child.pid], pids)
time.sleep(600)
"""


async def stubborn_pids(http: httpx.AsyncClient, tag: str, pids_file: Path) -> tuple[str, list[int]]:
    run_id = await submit(http, [sys.executable, "-c", STUBBORN_OP], tag=tag, env={"PIDS_FILE": str(pids_file)})
    written = await until(lambda: pids_file.exists() and pids_file.read_text(), 30, what="the op wrote its pids")
    pids: list[int] = json.loads(written)
    assert all(pid_alive(pid) for pid in pids)
    return run_id, pids


async def test_an_op_ignoring_sigterm_and_its_child_end_on_cancel_and_with_a_killed_worker(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    tag = f"stubborn-{uuid.uuid4().hex[:6]}"
    own = WorkerProcess(unique_worker_name("stubborn"), tmp_path / "work", cluster.url, runtime="process", tags=(tag,),
                        stop_grace=1)  # fmt: skip
    await own.start(http)
    try:
        run_id, pids = await stubborn_pids(http, tag, tmp_path / "cancelled.json")
        assert (await http.post(f"/runs/{run_id}/cancel")).status_code == 200
        await until(lambda: not any(pid_alive(pid) for pid in pids), 15, interval=0.05,
                    what="the op and its child killed after the stop grace")  # fmt: skip

        _, pids = await stubborn_pids(http, tag, tmp_path / "orphaned.json")
        own.kill9()
        await until(lambda: not any(pid_alive(pid) for pid in pids), 10, interval=0.05,
                    what="the op and its child gone with their worker")  # fmt: skip
    finally:
        own.stop()


async def test_a_warm_instance_serves_run_after_run_in_one_process(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    name = await deploy(http, "warm", {"note": "string", "fail": "bool"}, keep_warm_seconds=60)
    runs = []
    for inputs in ({"note": "a", "fail": False}, {"note": "b", "fail": True}, {"note": "c", "fail": False}):
        state = "FAILED" if inputs.get("fail") else "COMPLETED"
        runs.append(await wait_run(http, await start_run(http, name, inputs), 30, state=state))
    first, failed, last = runs
    assert first["outputs"]["pid"] == last["outputs"]["pid"] and last["outputs"]["served"] == 3
    assert failed["state_reason"]["message"] == "ValueError: bad input"
    assert f"serving {last['id']} c" in (await http.get(f"/runs/{last['id']}/logs")).text
    assert pid_alive(first["outputs"]["pid"])  # idle now, kept warm
