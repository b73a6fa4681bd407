"""The runtime interface the attempt runner drives, and the bounded log capture every runtime shares."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gyoza.worker.iocontract import ExitStatus

DEFAULT_LOG_LIMIT = 10 * 1024 * 1024
TRUNCATED_MARKER = b"\n[gyoza: log truncated at the per-attempt limit]\n"


class ImageMissing(Exception):
    """The image is not on this machine and could not be pulled."""


class LaunchFailed(Exception):
    """The container or process could not be created or started."""


@dataclass(frozen=True)
class LaunchSpec:
    run_id: str
    attempt: int
    worker_id: str
    image: str
    command: list[str] | None
    env: dict[str, str]
    cpu: float
    ram_mb: int
    gpu_ids: list[int]
    io_dir: Path


class LogCapture:
    """stdout+stderr of one attempt: the first ``limit`` bytes, plus the last stderr lines for error messages.

    Appended to from reader threads (Docker) or tasks (process), read from the event loop.
    """

    def __init__(self, limit: int = DEFAULT_LOG_LIMIT, tail_lines: int = 20) -> None:
        self.limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._truncated = False
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._partial_stderr = b""
        self._lock = threading.Lock()
        self.version = 0

    def append(self, data: bytes, stderr: bool = False) -> None:
        with self._lock:
            room = self.limit - self._size
            if room > 0:
                kept = data[:room]
                self._chunks.append(kept)
                self._size += len(kept)
            if len(data) > max(room, 0):
                self._truncated = True
            if stderr:
                lines = (self._partial_stderr + data).split(b"\n")
                self._partial_stderr = lines.pop()
                self._stderr_tail.extend(line.decode(errors="replace") for line in lines if line.strip())
            self.version += 1

    def set_stderr_tail(self, lines: list[str]) -> None:
        """For runtimes that read stderr's end separately (Docker reads one merged stream while running)."""
        with self._lock:
            self._stderr_tail.clear()
            self._stderr_tail.extend(line for line in lines if line.strip())
            self._partial_stderr = b""

    def text(self) -> bytes:
        with self._lock:
            body = b"".join(self._chunks)
            return body + TRUNCATED_MARKER if self._truncated else body

    def stderr_tail(self) -> str:
        with self._lock:
            lines = list(self._stderr_tail)
            if self._partial_stderr.strip():
                lines.append(self._partial_stderr.decode(errors="replace"))
        return "\n".join(lines[-(self._stderr_tail.maxlen or len(lines)) :])


class Execution(Protocol):
    """A started attempt."""

    logs: LogCapture

    async def wait(self) -> ExitStatus: ...

    async def stop(self, grace: float) -> None: ...

    async def remove(self) -> None: ...


@dataclass
class Orphan:
    """An attempt started by a previous life of this worker, found still present at start-up."""

    run_id: str
    attempt: int
    execution: Execution
    io_dir: Path = field(default_factory=Path)


class Runtime(Protocol):
    async def ensure_image(self, image: str) -> None: ...

    async def launch(self, spec: LaunchSpec, logs: LogCapture) -> Execution: ...

    async def orphans(self, worker_id: str, work_dir: Path) -> list[Orphan]: ...
