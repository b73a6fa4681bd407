"""The guard of one process-runtime op: the op and every process it starts end with the attempt, and with the worker.

The worker runs ``python -I -S guard.py WORKER_PID CMD [ARGS...]`` (a script, standard library only, so it starts
fast and whatever the op's environment holds) as the leader of a new session, with a parent-death signal (SIGHUP)
that Linux sends even when the worker is killed with ``kill -9``. The guard runs CMD as its child and

- relays how the op ended: its exit code, or the signal that killed it;
- once the op's main process ended, kills what it left behind, so the attempt ends with the op as a container does;
- on the worker's death, kills the op and everything it started with SIGKILL, which no op can ignore or trap.

As a subreaper the guard inherits the orphans of the op's processes, so "everything" includes processes that left
the op's process group or session. SIGTERM (the worker stopping the op: sent to the whole group) is the op's to
handle; the guard waits for the op to end.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_LIBC = ctypes.CDLL(None, use_errno=True)


def _children() -> list[int]:
    """The guard's child processes (the op, and the orphans it inherited), from /proc."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == me:
            found.append(int(entry.name))
    return found


def kill_descendants() -> None:
    """SIGKILL every descendant. Killing a child hands its own children to the guard (the subreaper), so kill the
    children and reap one, until there is no child left."""
    while True:
        for pid in _children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _worker_died(*_: Any) -> NoReturn:
    kill_descendants()
    os._exit(128 + signal.SIGKILL)


def _die_with_guard() -> None:
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _end_like(returncode: int) -> NoReturn:
    """Exit as the op did: with its code, or killed by its signal."""
    if returncode >= 0:
        sys.exit(returncode)
    sig = -returncode
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    sys.exit(128 + sig)  # a signal that does not end a process by default


def main(argv: list[str]) -> NoReturn:
    worker_pid, command = int(argv[0]), argv[1:]
    _LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGHUP, _worker_died)
    signal.signal(signal.SIGTERM, lambda *_: None)  # the op received it too: wait for the op to end
    if os.getppid() != worker_pid:
        _worker_died()  # the worker died before its parent-death signal was set
    try:
        op = subprocess.Popen(command, preexec_fn=_die_with_guard)
    except OSError as exc:
        print(f"gyoza: cannot start {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(127)
    returncode = op.wait()
    kill_descendants()
    _end_like(returncode)


if __name__ == "__main__":
    main(sys.argv[1:])
