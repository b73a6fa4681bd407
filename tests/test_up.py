"""``gyoza up`` as a user runs it in a terminal (a real process in its own process group; Ctrl-C is a SIGINT to
that whole group, as a terminal sends it).

Ctrl-C drains: the worker finishes its running ops and their reports land while the server still answers; only
then do the server and NATS stop. A second Ctrl-C stops at once and says what it left; Docker containers left that
way are adopted by the next start, so an op that finished meanwhile is COMPLETED, never lost. A second ``gyoza up``
on the same data dir, or on a taken port, fails before it starts anything and before it says "up".
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dockerimages import PYOP, require_images
from tests.processes import free_port, pid_alive, terminate
from tests.simworker import wait_run
from tests.waiting import until
from tests.workerproc import run_containers

REPO = Path(__file__).resolve().parent.parent
OPS_DIR = REPO / "tests" / "images" / "pyop"
UP_TIMEOUT_S = 60.0


class Up:
    """``gyoza up`` on its own data dir and port, its output in a log file."""

    def __init__(self, data_dir: Path, port: int, *args: str) -> None:
        self.data_dir, self.port, self.args = data_dir, port, args
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = data_dir.parent / f"up-{port}-{os.urandom(3).hex()}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> Up:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GYOZA_")}
        command = [sys.executable, "-m", "gyoza", "up", "--data-dir", str(self.data_dir), "--port", str(self.port),
                   "--network", "none", *self.args]  # fmt: skip
        with self.log_path.open("wb") as log:
            # A session of its own: a Ctrl-C of the test's terminal does not reach it, ours reaches all of it.
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)  # fmt: skip
        return self

    async def start(self) -> Up:
        self.launch()

        async def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"gyoza up exited with {self.process.returncode}:\n{self.log()}")
            return "Gyoza is up" in self.log()

        await until(up, UP_TIMEOUT_S, interval=0.1, what="gyoza up says it is up")
        return self

    def client(self) -> httpx.AsyncClient:
        key = json.loads((self.data_dir / "config.json").read_text())["api_key"]
        return httpx.AsyncClient(base_url=self.url, headers={"X-API-Key": key}, timeout=30)

    def ctrl_c(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)

    async def exited(self, within: float) -> int:
        assert self.process is not None
        process = self.process
        await until(lambda: process.poll() is not None, within, interval=0.05, what="gyoza up exited")
        return process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        terminate(self.process, 60)


@pytest.fixture
def ups() -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        if up.process is not None and up.process.poll() is None:
            os.killpg(up.process.pid, signal.SIGKILL)
            up.process.wait()


def sleep_run(seconds: float) -> dict[str, Any]:
    """An ad hoc run of the test op ``sleep`` for the process runtime (this interpreter, the ops on PYTHONPATH)."""
    return {
        "image": "local/process", "command": [sys.executable, "-m", "gyoza.op", "ops:sleep"],
        "env": {"PYTHONPATH": f"{OPS_DIR}:{REPO}"}, "inputs": {"seconds": seconds},
    }  # fmt: skip


async def submit(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await http.post("/runs", json=body)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


@pytest.fixture
async def process_up(tmp_path: Path, ups: list[Up]) -> AsyncIterator[Up]:
    up = await Up(tmp_path / "gyoza", free_port(), "--runtime", "process").start()
    ups.append(up)
    yield up


async def test_ctrl_c_drains_the_worker_first_and_its_reports_land(process_up: Up, ups: list[Up]) -> None:
    async with process_up.client() as http:
        runs = [await submit(http, sleep_run(3)) for _ in range(2)]
        for run_id in runs:
            await wait_run(http, run_id, 30, state="RUNNING")
        process_up.ctrl_c()
        await until(lambda: "draining" in process_up.log(), 10, interval=0.05, what="the worker drains")
        # The server still answers while the worker drains.
        assert (await http.get("/health")).status_code == 200
    assert await process_up.exited(30) == 0, process_up.log()
    assert "the worker finishes its running ops first" in process_up.log()

    again = await Up(process_up.data_dir, process_up.port, "--runtime", "process").start()
    ups.append(again)
    async with again.client() as http:
        for run_id in runs:
            run = (await http.get(f"/runs/{run_id}")).json()
            assert (run["state"], run["current_attempt"], run["outputs"]) == ("COMPLETED", 1, {"slept": 3}), run
    again.ctrl_c()
    assert await again.exited(30) == 0, again.log()


async def test_a_second_ctrl_c_stops_at_once_and_says_what_it_left(process_up: Up) -> None:
    async with process_up.client() as http:
        run_id = await submit(http, sleep_run(120))
        await wait_run(http, run_id, 30, state="RUNNING")
    process_up.ctrl_c()
    await until(lambda: "draining" in process_up.log(), 10, interval=0.05, what="the worker drains")
    process_up.ctrl_c()
    assert await process_up.exited(20) == 0, process_up.log()
    log = process_up.log()
    assert "Stopping at once." in log
    assert f"run {run_id} attempt 1: RUNNING on the server" in log, log
    assert "SPEC 5.4" in log


async def test_a_second_up_on_the_same_data_dir_is_refused_naming_the_first(process_up: Up, tmp_path: Path) -> None:
    store = process_up.data_dir / "nats" / "jetstream"
    nats_before = nats_servers_of(store)
    second = Up(process_up.data_dir, free_port(), "--runtime", "process").launch()
    try:
        assert await second.exited(30) == 1, second.log()
    finally:
        second.stop()
    assert process_up.process is not None
    assert f"is in use by pid {process_up.process.pid} (gyoza up --data-dir" in second.log()
    assert "Gyoza is up" not in second.log()
    assert nats_servers_of(store) == nats_before, "no second nats-server on the live store"

    env = {k: v for k, v in os.environ.items() if not k.startswith("GYOZA_")}
    env.update(GYOZA_DATA_DIR=str(process_up.data_dir), GYOZA_API_KEY="k", GYOZA_PORT=str(free_port()))
    server = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gyoza", "server", "start"], env=env,
                                     capture_output=True, text=True, timeout=30)  # fmt: skip
    assert server.returncode == 1
    assert f"is in use by pid {process_up.process.pid}" in server.stderr


async def test_a_taken_port_fails_the_start_before_anything_runs(tmp_path: Path, ups: list[Up]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = Up(tmp_path / "gyoza", port, "--runtime", "process").launch()
        ups.append(up)
        assert await up.exited(30) == 1, up.log()
        assert f"cannot listen on 127.0.0.1:{port}" in up.log()
        assert "Gyoza is up" not in up.log()
        assert not (tmp_path / "gyoza" / "nats" / "jetstream").exists(), "no nats-server was started"


def nats_servers_of(store: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if os.fsencode(store) in args and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return sorted(found)


async def test_a_container_left_by_a_second_ctrl_c_is_adopted_and_completes(tmp_path: Path, ups: list[Up]) -> None:
    require_images(PYOP)
    data_dir, port = tmp_path / "gyoza", free_port()
    first = await Up(data_dir, port, "--runtime", "docker").start()
    ups.append(first)
    async with first.client() as http:
        run_id = await submit(http, {"image": PYOP, "command": ["ops:sleep"], "inputs": {"seconds": 4}})
        await wait_run(http, run_id, 30, state="RUNNING")
    first.ctrl_c()
    await until(lambda: "draining" in first.log(), 10, interval=0.05, what="the worker drains")
    first.ctrl_c()
    assert await first.exited(20) == 0, first.log()
    assert f"run {run_id} attempt 1: RUNNING on the server; its container keeps running" in first.log()
    # While nothing of Gyoza runs, the op ends by itself.
    await until(lambda: [c.status for c in run_containers(run_id)] == ["exited"], 30, interval=0.2,
                what="the abandoned container finished on its own")  # fmt: skip

    again = await Up(data_dir, port, "--runtime", "docker").start()
    ups.append(again)
    async with again.client() as http:
        run = await wait_run(http, run_id, 30, state="COMPLETED")
    assert (run["current_attempt"], run["outputs"]) == (1, {"slept": 4}), "finished while down: not marked lost"
    await until(lambda: not run_containers(run_id), 10, interval=0.1, what="the adopted container removed")
    again.ctrl_c()
    assert await again.exited(30) == 0, again.log()
