"""The process runtime: runs the op's ``command`` as a local subprocess with the same IO contract.

For development machines without Docker and for the embedded ``gyoza up`` default. NOT isolated: the op runs as the
worker's user, sees the whole machine, and its CPU, RAM and GPU constraints are not enforced (only scheduled).
The IO directory is passed in ``GYOZA_IO_DIR`` instead of being mounted at /gyoza.

Each op runs under a small guard process (``guard.py``), the leader of a session of its own: a stop (cancel,
timeout) signals that whole process group, SIGTERM then SIGKILL after the grace; the end of the op's main process
ends everything it started; and the worker's death, even by ``kill -9``, kills the op and all it started, however it
handles SIGTERM. So an op never outlives its worker to run beside its own retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import sys
from pathlib import Path

from gyoza.op._contract import IO_DIR_VAR
from gyoza.processes import die_with_parent
from gyoza.schema import PullCredential
from gyoza.worker.iocontract import ExitStatus
from gyoza.worker.runtimes.base import LaunchFailed, LaunchSpec, LogCapture, Orphan
from gyoza.worker.telemetry import UsageMeter

GUARD = Path(__file__).with_name("guard.py")
# The pipes are read by tasks of this loop: lines an op flushed before its done.json are read within a loop turn.
READ_BACK_SETTLE_S = 0.01


class ProcessExecution:
    def __init__(self, process: asyncio.subprocess.Process, logs: LogCapture) -> None:
        self.process = process
        self.logs = logs
        self.meter = UsageMeter()  # not sampled: a plain process has no cgroup of its own here
        self.since: float | None = None  # nothing to read back: the pipes are the whole record
        assert process.stdout is not None and process.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(process.stdout, stderr=False)),
            asyncio.create_task(self._read(process.stderr, stderr=True)),
        ]

    async def _read(self, stream: asyncio.StreamReader, stderr: bool) -> None:
        while chunk := await stream.read(65536):
            self.logs.append(chunk, stderr=stderr)

    async def read_back(self, since: float | None) -> None:
        """The op flushed before saying the attempt is done: a moment for the readers to take what it wrote."""
        await asyncio.sleep(READ_BACK_SETTLE_S)
        self.logs.close()

    async def wait(self) -> ExitStatus:
        code = await self.process.wait()
        await asyncio.gather(*self._readers)
        self.logs.close()
        return ExitStatus(exit_code=code if code >= 0 else 128 - code)

    async def stop(self, grace: float) -> None:
        """SIGTERM to the op's process group, then SIGKILL after ``grace`` seconds."""
        if self.process.returncode is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            self._signal_group(signal.SIGKILL)

    async def remove(self) -> None:
        await self.stop(0)

    def abandon(self) -> bool:
        """A process cannot outlive its worker to be adopted: end it (and all it started) now."""
        if self.process.returncode is None:
            self._signal_group(signal.SIGKILL)
        return False

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)  # the guard leads the group: its pid is the group's id


class ProcessRuntime:
    async def ensure_image(self, image: str, login: PullCredential | None = None) -> None:
        """Images play no part here: the command runs on this machine as it is."""

    async def launch(self, spec: LaunchSpec, logs: LogCapture) -> ProcessExecution:
        if not spec.command:
            raise LaunchFailed("the process runtime needs the op's command (the definition has none)")
        env = {**os.environ, **spec.env, IO_DIR_VAR: str(spec.io_dir)}
        executable = spec.command[0]
        if not shutil.which(executable, path=env.get("PATH")) and not (spec.io_dir / executable).is_file():
            raise LaunchFailed(f"cannot start {executable}: not found (on PATH, or as a path)")
        try:
            # Forked from the event loop's thread, which lives as long as the worker: the parent-death signal is
            # sent when the forking thread ends, not only the process.
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", str(GUARD), str(os.getpid()), *spec.command,
                env=env, cwd=spec.io_dir, start_new_session=True,
                preexec_fn=functools.partial(die_with_parent, signal.SIGHUP),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as exc:
            raise LaunchFailed(f"cannot start {executable}: {exc}") from None
        return ProcessExecution(process, logs)

    async def images(self) -> list[str]:
        return []  # no images: every process-runtime worker is as good as another

    async def orphans(self, worker_id: str, work_dir: Path) -> list[Orphan]:
        """Ops die with their worker (their guard kills them), so a previous life leaves nothing to adopt."""
        return []

    async def remove_instances(self, worker_id: str, instances_dir: Path) -> int:
        return 0  # died with the previous life, like every op of this runtime
