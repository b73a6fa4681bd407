"""Process plumbing shared by the server, the worker and their children: logging, signals, parent death."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child before exec: have Linux send it ``sig`` when its parent dies, even by ``kill -9``.

    Linux sends it when the *thread* that forked the child ends, so fork from a thread that lives as long as the
    process (the event loop's), never from a worker thread.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)


def stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT (Ctrl-C) sets, so long-running commands stop cleanly instead of raising."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


class Shutdown:
    """A stop in two steps: a first SIGTERM/SIGINT asks for a graceful one (``requested``: finish the work in hand),
    a second one for an immediate one (``urgent``: leave the work as it is). Set them directly in tests."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.urgent = asyncio.Event()

    def escalate(self) -> None:
        if self.requested.is_set():
            self.urgent.set()
        self.requested.set()


def shutdown_on_signals(on_signal: Callable[[Shutdown], None] | None = None) -> Shutdown:
    """A ``Shutdown`` driven by SIGTERM and SIGINT; ``on_signal`` runs after each, e.g. to tell the user."""
    shutdown = Shutdown()
    loop = asyncio.get_running_loop()

    def handle() -> None:
        shutdown.escalate()
        if on_signal is not None:
            on_signal(shutdown)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle)
    return shutdown


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per heartbeat and claim drowns what matters
