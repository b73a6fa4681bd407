"""``progress(n)`` and ``info(msg)``: JSON lines appended to ``events.jsonl``, which the worker tails live."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from typing import Any

from gyoza.op._context import io_dir
from gyoza.op._contract import EVENTS_FILE

_lock = threading.Lock()


def _emit(event: dict[str, Any]) -> None:
    line = (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    directory = io_dir()
    if not directory.is_dir():
        # Called outside an attempt (e.g. the op function in a unit test): show the event instead of failing.
        sys.stderr.write(line.decode())
        sys.stderr.flush()
        return
    # One write() on an O_APPEND descriptor per event: the line reaches the file whole and immediately, with no
    # user-space buffer to flush, so a reader tailing the file never sees half a line from us.
    with _lock:
        fd = os.open(directory / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def progress(percent: int | float) -> None:
    """Report progress, a number from 0 to 100 (floats are truncated to an int)."""
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise TypeError(f"progress expects a number from 0 to 100, got {type(percent).__name__}")
    if isinstance(percent, float) and not math.isfinite(percent):
        raise ValueError(f"progress must be from 0 to 100, got {percent}")
    if not 0 <= percent <= 100:
        raise ValueError(f"progress must be from 0 to 100, got {percent}")
    _emit({"type": "PROGRESS", "msg": int(percent)})


def info(msg: object) -> None:
    """Report a human-readable message (anything that is not a str is converted with ``str()``)."""
    _emit({"type": "INFO", "msg": msg if isinstance(msg, str) else str(msg)})
