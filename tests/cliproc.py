"""The ``gyoza`` CLI as a child process (``python -m gyoza ...``), run to completion or left running, with an empty
data dir and wide colourless output; and the checks on what it printed and how it exited."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO

from tests.processes import API_KEY, GyozaServer

CLI_TIMEOUT_S = 60.0
# Commands that build images (op build, op test, deploy) may take longer on a loaded machine.
BUILD_TIMEOUT_S = 120.0
NO_CONFIG_DIR = Path(tempfile.gettempdir()) / "gyoza-cli-no-config"
NO_SERVER = "http://127.0.0.1:9"  # the discard port: nothing listens there


def cli_env(home: Path, **gyoza_env: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYOZA_")}
    # Wide, colourless output: long ids and messages stay on one line, as a script would want to grep them.
    env.update(GYOZA_DATA_DIR=str(home), TERMINAL_WIDTH="400", NO_COLOR="1", **gyoza_env)
    return env


def gyoza_cli(
    server: GyozaServer | None,
    home: Path,
    *args: str,
    cwd: Path | None = None,
    timeout: float = CLI_TIMEOUT_S,
    stdin: str | None = None,
    **gyoza_env: str,
) -> subprocess.CompletedProcess[str]:
    """``python -m gyoza *args`` pointed at ``server`` through GYOZA_* env (None: no server settings at all);
    ``stdin``: what is piped in."""
    if server is not None:
        gyoza_env = {"GYOZA_SERVER_URL": server.url, "GYOZA_API_KEY": API_KEY, **gyoza_env}
    return subprocess.run(
        [sys.executable, "-m", "gyoza", *args], env=cli_env(home, **gyoza_env), capture_output=True, text=True,
        timeout=timeout, cwd=cwd, input=stdin,
    )  # fmt: skip


def gyoza_offline(*args: str, cwd: Path, **gyoza_env: str) -> subprocess.CompletedProcess[str]:
    """The CLI in ``cwd`` (an op folder) with nothing from ~/.gyoza and no server unless ``gyoza_env`` names one."""
    env = {"GYOZA_SERVER_URL": NO_SERVER, **gyoza_env}
    return gyoza_cli(None, NO_CONFIG_DIR, *args, cwd=cwd, timeout=BUILD_TIMEOUT_S, **env)


def server_env(server: GyozaServer) -> dict[str, str]:
    return {"GYOZA_SERVER_URL": server.url, "GYOZA_API_KEY": API_KEY}


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def spawn(server: GyozaServer, home: Path, *args: str) -> subprocess.Popen[str]:
    """``python -m gyoza *args`` left running (watch, tail --follow), its output piped.

    Ctrl-C is restored for it: a suite started in the background by a shell without job control inherits SIGINT
    ignored, and Python then never raises ``KeyboardInterrupt``, as a user's terminal always would."""
    env = cli_env(home, GYOZA_SERVER_URL=server.url, GYOZA_API_KEY=API_KEY)
    command = [sys.executable, "-m", "gyoza", *args]
    return subprocess.Popen(
        command, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=_ctrl_c_restored
    )


def _ctrl_c_restored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Lines:
    """Every line a running CLI writes on one of its pipes, collected by a thread as it comes."""

    def __init__(self, pipe: IO[str] | None) -> None:
        assert pipe is not None, "the pipe was not captured"
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            self.lines.append(line)

    def having(self, text: str) -> str | None:
        """The first line so far that contains ``text``."""
        return next((line for line in list(self.lines) if text in line), None)

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "".join(self.lines)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], code: int, *expected: str) -> str:
    """Assert exit ``code``, that stderr names each ``expected`` text, and that no traceback leaked."""
    assert result.returncode == code, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    for text in expected:
        assert text in result.stderr, f"{text!r} not in stderr: {result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    return result.stderr
