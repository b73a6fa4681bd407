"""One process at a time per data dir: an exclusive ``flock`` on ``<data dir>/gyoza.lock``, held while it runs.

The embedded NATS store under the data dir must never have two nats-servers (two ``gyoza up`` or ``server start``
on the same dir corrupt it), so whoever runs the embedded NATS claims the dir first. The lock file names its holder
(pid and command line), so the refusal can say who holds it. The kernel drops the lock when the holder exits, even
by ``kill -9``: there is no stale lock to clean up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path

LOCK_FILE = "gyoza.lock"


class DataDirInUse(Exception):
    """Another live process holds the data dir."""


class DataDirLock:
    """``with DataDirLock(path):`` holds the data dir, or raises ``DataDirInUse`` naming the holder."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # No O_TRUNC: until the lock is ours, the file holds the current holder's name.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DataDirInUse(
                f"the data dir {self.path.parent} is in use by {holder}; stop that first, or give this one another "
                "--data-dir (GYOZA_DATA_DIR)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({' '.join(_command_line())})\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _command_line() -> list[str]:
    """How this process was started, as a user would have typed it (``gyoza up``, not ``.../python -m gyoza up``)."""
    args = sys.orig_argv
    if args[1:3] == ["-m", "gyoza"]:
        return ["gyoza", *args[3:]]
    if len(args) > 1 and Path(args[1]).name == "gyoza":  # the console script, run by its interpreter
        return ["gyoza", *args[2:]]
    return args
