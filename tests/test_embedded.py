"""The embedded NATS lifecycle: the server owns its nats-server child, stops it on SIGTERM/SIGINT, needs an API key."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import GyozaServer, child_pids, free_port, pid_alive


def nats_child(server: GyozaServer) -> int:
    """The pid of the embedded nats-server the Gyoza server process started."""
    assert server.process is not None
    found = [
        pid for pid in child_pids(server.process.pid) if Path(f"/proc/{pid}/comm").read_text().strip() == "nats-server"
    ]
    assert len(found) == 1, f"expected one nats-server child, found {found}"
    return found[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_server_and_its_nats_server(data_dir: Path, sig: signal.Signals) -> None:
    server = GyozaServer(data_dir, None).start()
    assert server.process is not None
    children = child_pids(server.process.pid)
    nats_pid = nats_child(server)
    try:
        server.process.send_signal(sig)
        assert server.process.wait(20) == 0, server.log_path.read_text()
        # Checked at once, not polled: a clean shutdown stops nats-server before exiting. Polling would let the
        # parent-death signal hide an orphan left by a broken shutdown path.
        assert not pid_alive(nats_pid), "nats-server outlived the Gyoza server"
        assert [pid for pid in children if pid_alive(pid)] == [], "a child process of the server was orphaned"
    finally:
        for pid in children:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        server.stop()


@pytest.mark.parametrize("key_env", [None, ""], ids=["unset", "empty"])
def test_server_refuses_to_start_without_an_api_key(tmp_path: Path, key_env: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYOZA_")}
    # A private data dir and port, so that a server that wrongly starts touches nothing shared.
    env.update(GYOZA_DATA_DIR=str(tmp_path / "gyoza"), GYOZA_PORT=str(free_port()), GYOZA_HOST="127.0.0.1")
    if key_env is not None:
        env["GYOZA_API_KEY"] = key_env
    # A server that starts anyway never exits: the timeout turns that into a failure (and kills it).
    result = subprocess.run(
        [sys.executable, "-m", "gyoza", "server", "start"], env=env, capture_output=True, timeout=20
    )
    assert result.returncode == 2, result.stderr.decode()
    assert b"API key" in result.stderr
    assert not (tmp_path / "gyoza" / "nats").exists(), "the embedded nats-server was started before the key check"


def test_server_refuses_to_start_on_a_taken_port_before_starting_nats(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYOZA_")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env.update(GYOZA_DATA_DIR=str(tmp_path / "gyoza"), GYOZA_PORT=str(port), GYOZA_API_KEY="k")
        result = subprocess.run([sys.executable, "-m", "gyoza", "server", "start"], env=env, capture_output=True,
                                text=True, timeout=30)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "server ready" not in result.stderr
    assert not (tmp_path / "gyoza" / "nats" / "jetstream").exists(), "nats-server was started before the bind"
