"""Process plumbing shared by the server, the worker and their children: logging, signals, parent death."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec: have Linux send it SIGTERM when its parent dies, even by ``kill -9``."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT (Ctrl-C) sets, so long-running commands stop cleanly instead of raising."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per heartbeat and claim drowns what matters
