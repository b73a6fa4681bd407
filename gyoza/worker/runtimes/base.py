"""The runtime interface the attempt runner drives, and the bounded log capture every runtime shares."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from gyoza.schema import PullCredential
from gyoza.worker.iocontract import ExitStatus
from gyoza.worker.telemetry import UsageMeter

DEFAULT_LOG_LIMIT = 10 * 1024 * 1024
STDOUT, STDERR = "stdout", "stderr"
TRUNCATED_MARKER = b"\n[gyoza: log truncated at the per-attempt limit]\n"
# What a secret's value is written as in a captured log.
MASK = b"***"


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
    secret_names: tuple[str, ...] = ()  # the variables of ``env`` that hold secrets (a label names them)
    login: PullCredential | None = None  # for pulling ``image`` again, should it be gone by the create
    cache_dir: Path | None = None  # the definition's cache directory on this machine, if it is one's run
    # A warm instance (``gyoza.worker.warm``) rather than one attempt: ``io_dir`` is the instance's directory, and the
    # container is labelled and named after the instance.
    instance_id: str | None = None


class LogCapture:
    """stdout and stderr of one attempt as lines, each stamped with its time and stream, in time order::

        2025-06-01T12:00:00.123456Z stdout loading the model
        2025-06-01T12:00:01.654321Z stderr warning: no GPU

    The first ``limit`` bytes are kept, and the last stderr lines apart (for error messages). Appended to from
    reader threads (Docker) or tasks (process), read from the event loop. The values of the attempt's secrets are
    written ``***`` in every line kept (``mask``): each line is whole by then, so a value split across reads is
    caught too.
    """

    def __init__(self, limit: int = DEFAULT_LOG_LIMIT, tail_lines: int = 20, masks: Iterable[str] = ()) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._masks: list[bytes] = []
        self.mask(masks)
        self._chunks: list[bytes] = []
        self._size = 0
        self._truncated = False
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._partial: dict[str, tuple[str, bytes]] = {}  # stream -> (stamp of its first byte, unfinished line)
        self._sealed = False
        self.version = 0

    def mask(self, values: Iterable[str]) -> None:
        """Write ``***`` for these values in every line kept from now on (each line of a multi-line value too)."""
        pieces = {line.encode() for value in values for line in value.splitlines() if line.strip()}
        with self._lock:
            self._masks = sorted(pieces | set(self._masks), key=len, reverse=True)  # the longest first

    def _masked(self, line: bytes) -> bytes:
        for value in self._masks:
            line = line.replace(value, MASK)
        return line

    def append(self, data: bytes, stderr: bool = False) -> None:
        """Bytes read from the op's stdout or stderr, in any chunking, stamped with the time they arrived."""
        self.add(timestamp(), STDERR if stderr else STDOUT, data)

    def add(self, stamp: str, stream: str, data: bytes) -> None:
        """``data`` that ``stream`` received at ``stamp``: complete lines are kept at once; an unfinished last line
        waits for its end (stamped with the time its first byte came) or for ``close``."""
        with self._lock:
            if not self._sealed:
                self._add(stamp, stream, data)

    def close(self) -> None:
        """The streams ended: keep the unfinished last lines too."""
        with self._lock:
            self._close()

    def replace(self, pieces: list[tuple[str, str, bytes]]) -> None:
        """Start over from a complete record of (stamp, stream, data) pieces — Docker's own, read back once the
        container exited — and ignore whatever a live reader still adds."""
        with self._lock:
            self._chunks, self._size, self._truncated, self._partial = [], 0, False, {}
            self._stderr_tail.clear()
            for stamp, stream, data in sorted(pieces, key=lambda piece: piece[0]):  # stable: in order within a stamp
                self._add(stamp, stream, data)
            self._close()
            self._sealed = True

    def _add(self, stamp: str, stream: str, data: bytes) -> None:
        first_stamp, pending = self._partial.pop(stream, (stamp, b""))
        *lines, rest = (pending + data).split(b"\n")
        for index, line in enumerate(lines):
            self._keep(first_stamp if index == 0 else stamp, stream, line)
        if rest:
            self._partial[stream] = (first_stamp if not lines else stamp, rest)
        self.version += 1

    def _close(self) -> None:
        for stream, (stamp, line) in sorted(self._partial.items(), key=lambda item: item[1][0]):
            self._keep(stamp, stream, line)
        self._partial.clear()
        self.version += 1

    def _keep(self, stamp: str, stream: str, line: bytes) -> None:
        line = self._masked(line)
        if stream == STDERR and line.strip():
            self._stderr_tail.append(line.decode(errors="replace"))
        record = b"%s %s %s\n" % (stamp.encode(), stream.encode(), line)
        if self._truncated or len(record) > self.limit - self._size:
            self._truncated = True  # the log keeps its first lines, without gaps
            return
        self._chunks.append(record)
        self._size += len(record)

    def set_stderr_tail(self, lines: list[str]) -> None:
        """For runtimes that read stderr's end separately (Docker, when the whole log was over the limit)."""
        with self._lock:
            self._stderr_tail.clear()
            self._stderr_tail.extend(line for line in lines if line.strip())

    def text(self) -> bytes:
        with self._lock:
            body = b"".join(self._chunks)
            return body + TRUNCATED_MARKER if self._truncated else body

    def since(self, index: int) -> tuple[list[bytes], int, bool]:
        """The lines kept after the first ``index`` (for live shipping), the count kept so far, and whether lines
        were dropped at the limit."""
        with self._lock:
            return self._chunks[index:], len(self._chunks), self._truncated

    def stderr_tail(self) -> str:
        with self._lock:
            lines = list(self._stderr_tail)
            if STDERR in self._partial and self._partial[STDERR][1].strip():
                lines.append(self._masked(self._partial[STDERR][1]).decode(errors="replace"))
        return "\n".join(lines[-(self._stderr_tail.maxlen or len(lines)) :])


def timestamp() -> str:
    """The stamp of a log line: now, UTC, microseconds, fixed width (so stamps sort as strings)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Execution(Protocol):
    """A started attempt."""

    logs: LogCapture
    meter: UsageMeter  # what it uses, sampled while it runs (empty where the runtime cannot tell)
    # Where the read-back after the exit starts, a Unix time (None: the start): a warm instance's attempt's hand-over.
    since: float | None

    async def wait(self) -> ExitStatus: ...

    async def read_back(self, since: float | None) -> None:
        """Make ``logs`` complete for what the op wrote from ``since`` (a Unix time; None: its start) until now:
        a warm instance's attempt ended while the op goes on (``logs`` is then sealed)."""
        ...

    async def stop(self, grace: float) -> None: ...

    async def remove(self) -> None: ...

    def abandon(self) -> bool:
        """The worker stops without settling this attempt: leave what a later life of the worker can adopt (True),
        or end what it could not (False)."""
        ...


@dataclass
class Orphan:
    """An attempt started by a previous life of this worker, found still present at start-up."""

    run_id: str
    attempt: int
    execution: Execution


class Runtime(Protocol):
    async def ensure_image(self, image: str, login: PullCredential | None = None) -> None:
        """Have ``image`` here, pulling it as the policy says (with ``login`` for its registry, if given)."""
        ...

    async def launch(self, spec: LaunchSpec, logs: LogCapture) -> Execution: ...

    async def orphans(self, worker_id: str, work_dir: Path) -> list[Orphan]: ...

    async def remove_instances(self, worker_id: str, instances_dir: Path) -> int:
        """Remove the warm instances a previous life of this worker left (they serve nobody now); how many."""
        ...

    async def images(self) -> list[str]:
        """The images this runtime has (``repo:tag``), for placement to prefer a worker that need not pull."""
        ...
