"""The process runtime: runs the op's ``command`` as a local subprocess with the same IO contract.

For development machines without Docker and for the embedded ``gyoza up`` default. NOT isolated: the op runs as the
worker's user, sees the whole machine, and its CPU, RAM and GPU constraints are not enforced (only scheduled).
The IO directory is passed in ``GYOZA_IO_DIR`` instead of being mounted at /gyoza.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from gyoza.processes import die_with_parent
from gyoza.worker.iocontract import ExitStatus
from gyoza.worker.runtimes.base import LaunchFailed, LaunchSpec, LogCapture, Orphan


class ProcessExecution:
    def __init__(self, process: asyncio.subprocess.Process, logs: LogCapture) -> None:
        self.process = process
        self.logs = logs
        assert process.stdout is not None and process.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(process.stdout, stderr=False)),
            asyncio.create_task(self._read(process.stderr, stderr=True)),
        ]

    async def _read(self, stream: asyncio.StreamReader, stderr: bool) -> None:
        while chunk := await stream.read(65536):
            self.logs.append(chunk, stderr=stderr)

    async def wait(self) -> ExitStatus:
        code = await self.process.wait()
        await asyncio.gather(*self._readers)
        return ExitStatus(exit_code=code if code >= 0 else 128 - code)

    async def stop(self, grace: float) -> None:
        """SIGTERM to the op's process group, then SIGKILL after ``grace`` seconds."""
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    async def remove(self) -> None:
        await self.stop(0)


class ProcessRuntime:
    async def ensure_image(self, image: str) -> None:
        """Images play no part here: the command runs on this machine as it is."""

    async def launch(self, spec: LaunchSpec, logs: LogCapture) -> ProcessExecution:
        if not spec.command:
            raise LaunchFailed("the process runtime needs the op's command (the definition has none)")
        env = {**os.environ, **spec.env, "GYOZA_IO_DIR": str(spec.io_dir)}
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.command, env=env, cwd=spec.io_dir, start_new_session=True, preexec_fn=die_with_parent,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as exc:
            raise LaunchFailed(f"cannot start {spec.command[0]}: {exc}") from None
        return ProcessExecution(process, logs)

    async def orphans(self, worker_id: str, work_dir: Path) -> list[Orphan]:
        """Ops die with their worker (parent-death signal), so a previous life leaves nothing to adopt."""
        return []
