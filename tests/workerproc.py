"""Real workers for end-to-end tests: ``python -m gyoza worker start ...`` as child processes.

Each worker gets a name, a work dir, the server URL, a runtime, network ``none`` and its own log file. ``stop`` sends
SIGTERM (the worker drains), ``kill9`` kills it without a chance to clean up, ``start`` again brings it back under
the same name and work dir (a restart). ``containers`` lists what the Docker engine still holds for a run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import docker.errors
import httpx

from gyoza.processes import die_with_parent
from tests.dockerimages import docker_client
from tests.processes import API_KEY, GyozaServer, terminate
from tests.waiting import until

LABEL_RUN, LABEL_ATTEMPT, LABEL_WORKER = "gyoza.run_id", "gyoza.attempt", "gyoza.worker_id"
ONLINE_TIMEOUT_S = 30.0
# Heartbeats every 0.5 s (cancel commands ride on the replies), eviction after 3 s: fast, yet not flaky under load.
FAST_SETTINGS = {"GYOZA_HEARTBEAT_INTERVAL": "0.5", "GYOZA_WORKER_TIMEOUT": "3", "GYOZA_LEASE_TTL": "2"}


def start_server(data_dir: Path) -> GyozaServer:
    """A private server on its own embedded NATS: no other test's scheduler or workers meet these workers."""
    return GyozaServer(data_dir, None, **FAST_SETTINGS).start()


def unique_worker_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class WorkerProcess:
    def __init__(
        self,
        name: str,
        work_dir: Path,
        server_url: str,
        runtime: str = "docker",
        tags: tuple[str, ...] = (),
        cpu: float = 4,
        ram_mb: int = 4096,
        gpus: str = "none",
        stop_grace: float = 2.0,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        mode: str = "rest",
    ) -> None:
        self.name = name
        self.work_dir = work_dir
        self.server_url = server_url
        self.runtime = runtime
        self.tags = tags
        self.cpu, self.ram_mb, self.gpus = cpu, ram_mb, gpus
        self.stop_grace = stop_grace
        self.env = env or {}
        self.mode = mode
        self.log_path = log_path or work_dir.parent / f"worker-{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "gyoza", "worker", "start",
            "--name", self.name, "--work-dir", str(self.work_dir), "--runtime", self.runtime, "--network", "none",
            "--tags", ",".join(self.tags), "--cpu", str(self.cpu), "--ram-mb", str(self.ram_mb), "--gpus", self.gpus,
            "--stop-grace", str(self.stop_grace), "--mode", self.mode,
        ]  # fmt: skip

    def launch(self) -> WorkerProcess:
        """Start the process without waiting for it to register."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GYOZA_")}
        env.update(GYOZA_API_KEY=API_KEY, GYOZA_SERVER_URL=self.server_url, GYOZA_LOG_LEVEL="info", **self.env)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # die_with_parent: a crashed test session does not leave workers behind.
            self.process = subprocess.Popen(self.command(), env=env, stdout=log, stderr=log, preexec_fn=die_with_parent)
        return self

    async def start(self, http: httpx.AsyncClient) -> WorkerProcess:
        """Start the process and wait until the server lists the worker ONLINE after a heartbeat of this life."""
        before = await self._last_heartbeat(http)
        self.launch()

        async def online() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited {self.process.returncode}: {self.log()}")
            response = await http.get(f"/workers/{self.name}")
            if response.status_code != 200:
                return False
            view = response.json()
            return bool(view["status"] == "ONLINE" and view.get("last_heartbeat") != before)

        await until(online, ONLINE_TIMEOUT_S, interval=0.1, what=f"worker {self.name} online")
        return self

    async def _last_heartbeat(self, http: httpx.AsyncClient) -> Any:
        response = await http.get(f"/workers/{self.name}")
        return response.json().get("last_heartbeat") if response.status_code == 200 else None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait (the worker drains); returns the exit code."""
        return terminate(self.process, timeout)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def containers(**labels: str | None) -> list[Any]:
    """Containers (running or not) carrying all these labels, e.g. ``containers(**{LABEL_RUN: run_id})`` (a None
    value: the label with any value).

    Sparse: one list call, no per-container inspect that would race with the worker removing the container.
    """
    selectors = [key if value is None else f"{key}={value}" for key, value in labels.items()]
    with docker_client() as client:
        return list(client.containers.list(all=True, sparse=True, filters={"label": selectors}))


def run_containers(run_id: str, attempt: int | None = None) -> list[Any]:
    labels = {LABEL_RUN: run_id} if attempt is None else {LABEL_RUN: run_id, LABEL_ATTEMPT: str(attempt)}
    return containers(**labels)


def remove_leftover_containers(*worker_names: str) -> list[str]:
    """Force-remove the containers these workers created; return their names (empty when none were left).

    Scoped to our worker names, so other test sessions on the same engine are never disturbed.
    """
    left = []
    for name in worker_names:
        for container in containers(**{LABEL_WORKER: name}):
            left.append(f"{container.attrs['Names']} ({container.status})")
            with docker_client() as client, contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(container.id, force=True)
    return left
