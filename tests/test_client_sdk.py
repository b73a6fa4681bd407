"""The client SDK (SPEC §9) against a private server with one Docker worker: ``GyozaClient`` and
``AsyncGyozaClient`` give equal answers to the same calls, server errors come back as the matching ``GyozaError``
subclass, defaults come from explicit args > GYOZA_* env > ``gyoza up``'s config.json; and ``gyoza up`` itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gyoza import client as client_module
from gyoza.client import AsyncGyozaClient, GyozaClient
from gyoza.errors import (
    InvalidInputs,
    InvalidTransition,
    RunNotFound,
    StaleAttempt,
    Unauthorized,
    Unavailable,
    VersionConflict,
)
from gyoza.schema import OpRun, RunState, WorkerEventIn
from tests.dockerimages import PYOP, require_images
from tests.processes import API_KEY, GyozaServer, child_pids, free_port, pid_alive
from tests.waiting import until
from tests.workerproc import WorkerProcess, remove_leftover_containers, run_containers, start_server, unique_worker_name

PROGRESS_SPECS = {"steps": {"type": "int"}, "delay": {"type": "float"}}
SPECS = {"ops:progress": PROGRESS_SPECS, "ops:echo": PROGRESS_SPECS, "ops:sleep": {"seconds": {"type": "float"}}}


@pytest.fixture(scope="module")
def gyoza(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GyozaServer]:
    server = start_server(tmp_path_factory.mktemp("sdk"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def worker(gyoza: GyozaServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WorkerProcess]:
    require_images(PYOP)
    name = unique_worker_name("sdk")
    process = WorkerProcess(name, tmp_path_factory.mktemp("sdk-worker") / "work", gyoza.url, stop_grace=1.0)
    async with httpx.AsyncClient(base_url=gyoza.url, headers={"X-API-Key": API_KEY}, timeout=30) as http:
        await process.start(http)
    yield process
    process.stop()
    assert not remove_leftover_containers(name), "every attempt removes its container"


@pytest.fixture
def sync(gyoza: GyozaServer) -> Iterator[GyozaClient]:
    with GyozaClient(gyoza.url, API_KEY) as client:
        yield client


@pytest.fixture
async def aio(gyoza: GyozaServer) -> AsyncIterator[AsyncGyozaClient]:
    async with AsyncGyozaClient(gyoza.url, API_KEY) as client:
        yield client


@pytest.fixture
def no_gyoza_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No GYOZA_* variables and an empty data dir (never ~/.gyoza); returns the data dir."""
    for key in list(os.environ):
        if key.startswith("GYOZA_"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("GYOZA_DATA_DIR", str(home))
    return home


def definition(command: str, **fields: Any) -> dict[str, Any]:
    name = "sdk-" + uuid.uuid4().hex[:10]
    return {"name": name, "version": "1.0.0", "image": PYOP, "command": [command], "input_specs": SPECS[command],
            **fields}  # fmt: skip


async def test_sync_and_async_clients_return_equal_results(
    sync: GyozaClient, aio: AsyncGyozaClient, worker: WorkerProcess
) -> None:
    spec = definition("ops:progress")
    deployed = sync.deploy_definition(spec)
    assert await aio.deploy_definition(spec) == deployed, "an identical re-deploy returns the stored definition"
    assert await aio.get_definition(spec["name"]) == sync.get_definition(spec["name"]) == deployed

    # One idempotency key: the async call gets the run the sync call created.
    key = uuid.uuid4().hex
    created = sync.create_run(spec["name"], {"steps": 2, "delay": 0.1}, priority=7, idempotency_key=key)
    again = await aio.create_run(spec["name"], {"steps": 2, "delay": 0.1}, priority=7, idempotency_key=key)
    assert (again.id, again.inputs, again.priority) == (created.id, {"steps": 2, "delay": 0.1}, 7)

    done_async = await aio.wait(created.id, timeout=60, poll_s=0.1)
    done_sync = await asyncio.to_thread(sync.wait, created.id, 60, 0.1)
    assert done_sync == done_async and done_sync.state == RunState.COMPLETED and done_sync.outputs == {"steps": 2}
    assert await aio.get_run(created.id) == sync.get_run(created.id)
    assert await aio.run_attempts(created.id) == sync.run_attempts(created.id)
    assert await aio.run_events(created.id) == sync.run_events(created.id)
    assert await aio.run_events(created.id, after=2) == sync.run_events(created.id, after=2)
    assert await aio.list_runs(op_definition=spec["name"]) == sync.list_runs(op_definition=spec["name"])
    assert [r.id for r in sync.list_runs(op_definition=spec["name"]).data] == [created.id]
    assert await aio.list_definitions() == sync.list_definitions()
    assert await aio.run_logs(created.id) == sync.run_logs(created.id)


async def test_cancel_retry_and_wait_timeout_behave_the_same_in_both(
    sync: GyozaClient, aio: AsyncGyozaClient, worker: WorkerProcess
) -> None:
    spec = definition("ops:sleep")
    sync.deploy_definition(spec)
    run = sync.create_run(spec["name"], {"seconds": 600})
    with pytest.raises(TimeoutError):
        sync.wait(run.id, timeout=0.3, poll_s=0.1)
    with pytest.raises(TimeoutError):
        await aio.wait(run.id, timeout=0.3, poll_s=0.1)

    cancelled = sync.cancel_run(run.id)
    finished = await aio.wait(run.id, timeout=30, poll_s=0.1)
    assert finished.state == RunState.CANCELLED
    assert (await aio.cancel_run(run.id)).state == sync.cancel_run(run.id).state == RunState.CANCELLED
    assert cancelled.id == run.id

    retried = await aio.retry_run(run.id)
    assert (retried.current_attempt, retried.state) == (2, RunState.PENDING)
    # Both clients refuse a retry of a run that is no longer FAILED/CANCELLED with the same exception.
    with pytest.raises(InvalidTransition):
        sync.retry_run(run.id)
    with pytest.raises(InvalidTransition):
        await aio.retry_run(run.id)
    await aio.cancel_run(run.id)
    await aio.wait(run.id, timeout=30, poll_s=0.1)
    retried_sync = sync.retry_run(run.id)
    assert (retried_sync.current_attempt, retried_sync.state) == (3, RunState.PENDING)
    sync.cancel_run(run.id)
    assert (await aio.wait(run.id, timeout=30, poll_s=0.1)).state == RunState.CANCELLED
    assert [a.number for a in await aio.run_attempts(run.id)] == [1, 2, 3]


async def test_server_errors_raise_the_matching_exception(
    sync: GyozaClient, aio: AsyncGyozaClient, gyoza: GyozaServer
) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(RunNotFound) as not_found:
        sync.get_run(missing)
    assert not_found.value.code == "RUN_NOT_FOUND" and missing in not_found.value.message
    with pytest.raises(RunNotFound):
        await aio.get_run(missing)

    spec = definition("ops:echo", tags=["nowhere"])  # never placed: no worker carries the tag
    sync.deploy_definition(spec)
    with pytest.raises(InvalidInputs) as invalid:
        sync.create_run(spec["name"], {"steps": "three", "delay": True, "extra": 1})
    fields = {d["field"] for d in invalid.value.details}
    assert {"inputs.steps", "inputs.delay", "inputs.extra"} <= fields, invalid.value.details
    with pytest.raises(InvalidInputs):
        await aio.create_run(spec["name"], {"steps": "three"})

    with pytest.raises(VersionConflict):
        sync.deploy_definition({**spec, "image": PYOP + "-other"})
    with pytest.raises(VersionConflict):
        await aio.deploy_definition({**spec, "description": "changed"})

    # A worker report for an attempt that is no longer current is fenced off.
    run = sync.create_run(spec["name"], {"steps": 1, "delay": 0.0})
    sync.cancel_run(run.id)
    assert sync.retry_run(run.id).current_attempt == 2
    with pytest.raises(StaleAttempt):
        sync.post_event(run.id, WorkerEventIn(attempt=1, worker_id="w1", type="STARTED"))
    with pytest.raises(StaleAttempt):
        await aio.post_event(run.id, WorkerEventIn(attempt=1, worker_id="w1", type="INFO", msg="late"))

    with GyozaClient(gyoza.url, "wrong-key") as wrong, pytest.raises(Unauthorized):
        wrong.list_runs()
    async with AsyncGyozaClient(gyoza.url, "wrong-key") as wrong_async:
        with pytest.raises(Unauthorized):
            await wrong_async.list_workers()

    down = f"http://127.0.0.1:{free_port()}"
    with GyozaClient(down, API_KEY) as unreachable, pytest.raises(Unavailable) as unavailable:
        unreachable.get_run(missing)
    assert down in unavailable.value.message
    async with AsyncGyozaClient(down, API_KEY) as unreachable_async:
        with pytest.raises(Unavailable):
            await unreachable_async.health()


def test_defaults_come_from_config_file_then_env_then_arguments(
    gyoza: GyozaServer, no_gyoza_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (no_gyoza_env / "config.json").write_text(json.dumps({"server_url": gyoza.url, "api_key": API_KEY}))
    with GyozaClient() as from_config:
        assert from_config.list_runs().object == "list", "no arguments, no env: gyoza up's config is used"

    monkeypatch.setenv("GYOZA_API_KEY", "wrong-key")
    with GyozaClient() as env_key, pytest.raises(Unauthorized):
        env_key.list_runs()
    down = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("GYOZA_SERVER_URL", down)
    with GyozaClient() as env_url, pytest.raises(Unavailable):
        env_url.list_runs()
    with GyozaClient(gyoza.url, API_KEY) as explicit:
        assert explicit.list_runs().object == "list", "explicit arguments beat env"


async def test_shared_client_is_built_lazily_from_the_environment(
    gyoza: GyozaServer, no_gyoza_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "_shared", {})
    monkeypatch.setenv("GYOZA_SERVER_URL", gyoza.url)
    monkeypatch.setenv("GYOZA_API_KEY", API_KEY)
    from gyoza.client import gyoza_client

    assert gyoza_client is client_module.gyoza_client, "one shared instance"
    assert isinstance(await asyncio.to_thread(gyoza_client.list_workers), list)
    gyoza_client.close()


class UpProcess:
    """``python -m gyoza up`` with its stdout read on a thread, so the test can wait for lines without blocking."""

    def __init__(self, port: int, data_dir: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GYOZA_")}
        env.update(GYOZA_DATA_DIR=str(data_dir), GYOZA_HEARTBEAT_INTERVAL="0.5", GYOZA_LOG_LEVEL="info")
        command = [sys.executable, "-m", "gyoza", "up", "--port", str(port), "--data-dir", str(data_dir),
                   "--network", "none"]  # fmt: skip
        with log.open("wb") as err:
            self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def line_starting(self, prefix: str) -> str | None:
        return next((line for line in self.lines if line.startswith(prefix)), None)


async def test_gyoza_up_runs_an_op_end_to_end_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path, no_gyoza_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_images(PYOP)
    data_dir, port = tmp_path / "up", free_port()
    up = UpProcess(port, data_dir, tmp_path / "up.log")
    try:
        key_line = await until(lambda: up.line_starting("API key:") or up.process.poll() is not None, 60, 0.1)
        assert isinstance(key_line, str), (
            f"gyoza up exited {up.process.returncode}: {(tmp_path / 'up.log').read_text()}"
        )
        url = f"http://127.0.0.1:{port}"
        assert up.line_starting("Gyoza is up at") == f"Gyoza is up at {url}"
        api_key = key_line.split()[2]
        config = data_dir / "config.json"
        assert json.loads(config.read_text()) == {"server_url": url, "api_key": api_key}
        assert stat.S_IMODE(config.stat().st_mode) == 0o600, "the key is readable by this user only"

        # The SDK finds the cluster from GYOZA_DATA_DIR alone: no URL, no key.
        monkeypatch.setenv("GYOZA_DATA_DIR", str(data_dir))
        async with AsyncGyozaClient() as client:
            await until(lambda: _local_worker_online(client), 30, 0.1, what="the local worker online")
            spec = definition("ops:progress")
            await client.deploy_definition(spec)
            run = await client.create_run(spec["name"], {"steps": 2, "delay": 0.1})
            finished: OpRun = await client.wait(run.id, timeout=60, poll_s=0.1)
        assert (finished.state, finished.outputs, finished.worker_id) == (RunState.COMPLETED, {"steps": 2}, "local")

        children = child_pids(up.process.pid)
        assert children, "the embedded nats-server runs as a child of gyoza up"
        up.process.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(up.process.wait, 60) == 0
    finally:
        if up.process.poll() is None:
            up.process.kill()
            up.process.wait()
    await until(lambda: not any(pid_alive(pid) for pid in children), 10, 0.1, what="no orphaned nats-server")
    assert not run_containers(run.id), "no container left behind"


async def _local_worker_online(client: AsyncGyozaClient) -> bool:
    return any(w.id == "local" and w.status == "ONLINE" for w in await client.list_workers())
