"""Real processes for tests: a nats-server and Gyoza servers, on random loopback ports in temp dirs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

API_KEY = "test-key"
# A first start replays every run into the index: with 100k runs (bench/storage.py) 18-30 s on a 2-core box.
READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GyozaServer:
    """``gyoza server start`` as a child process; ``nats_url=None`` runs it on its embedded NATS."""

    def __init__(
        self, data_dir: Path, nats_url: str | None, port: int | None = None, workers: int = 1, **env: str
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.nats_url = nats_url
        self.port = port or free_port()
        self.env = env
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> GyozaServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GYOZA_")}
        env.update(
            {
                "GYOZA_API_KEY": API_KEY,
                "GYOZA_PORT": str(self.port),
                "GYOZA_HOST": "127.0.0.1",
                "GYOZA_DATA_DIR": str(self.data_dir),
                "GYOZA_LOG_LEVEL": "warning",
                "GYOZA_SERVER_WORKERS": str(self.workers),
                **self.env,  # a caller's value wins, GYOZA_LOG_LEVEL included
            }
        )
        if self.nats_url:
            env["GYOZA_NATS_URL"] = self.nats_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gyoza", "server", "start"], env=env, stdout=log, stderr=log
            )
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gyoza server exited {self.process.returncode}: {self.log_path.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    self._wait_for_every_process(deadline)
                    return
            time.sleep(0.05)
        raise TimeoutError(f"gyoza server not ready: {self.log_path.read_text()}")

    def _wait_for_every_process(self, deadline: float) -> None:
        """With ``workers`` > 1 the server answers once one process does: wait until each has answered (every
        ``httpx.get`` is a new connection, which the kernel gives to any listening process)."""
        seen: set[int] = set()
        while len(seen) < self.workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only server processes {seen} answer: {self.log_path.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                seen.add(httpx.get(self.url + "/health", timeout=1).json()["pid"])

    def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        return terminate(self.process, 20)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def terminate(process: subprocess.Popen[bytes] | None, timeout: float) -> int | None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; returns the exit code (None if never started)."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc), to check that nothing is orphaned."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if not children.exists():
        return []
    return [int(p) for p in children.read_text().split()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())
