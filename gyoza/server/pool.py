"""The server in several processes on one port (``--workers N``), sharing one NATS.

The parent (``serve``) holds the data dir and the port. Here it starts the embedded nats-server (when configured),
applies the topology once, then starts N children. Each child binds its own SO_REUSEPORT socket on the port, so the
kernel spreads connections over them, and runs the whole app on that NATS: every endpoint, and the scheduler's lease
makes exactly one of them the leader. Children die with the parent (a parent-death SIGKILL, even on ``kill -9``);
on SIGTERM/SIGINT the parent stops them (each drains its requests), then NATS. A child that dies stops the pool, and
the parent's exit says which one: a supervisor restarts the whole server rather than run it short of a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
from asyncio.subprocess import Process

from gyoza.bus.connection import open_bus
from gyoza.bus.embedded import EmbeddedNats
from gyoza.processes import configure_logging, die_with_parent, stop_on_signals
from gyoza.server.serve import CannotListen, ServerProcessFailed, listen, serve_on
from gyoza.settings import Settings

log = logging.getLogger(__name__)

# Hypercorn's graceful 10 s for open requests, then closing NATS and the index; past it a child is killed.
CHILD_STOP_TIMEOUT_S = 30.0


async def serve_processes(
    settings: Settings, processes: int, stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    """Run ``processes`` server processes on ``settings.port`` (held by the caller) until ``stop`` is set."""
    embedded = None
    if settings.embedded_nats:
        embedded = EmbeddedNats(settings.data_dir / "nats")
        settings = settings.model_copy(update={"nats_url": await embedded.start()})
        log.info("embedded nats-server listening on %s", settings.nats_url)
    try:
        await (await open_bus(settings)).close()  # the topology applied once, not raced by the children
        await _supervise(settings, processes, stop, ready, "external" if embedded is None else "embedded")
    finally:
        if embedded is not None:
            embedded.stop()


async def _supervise(
    settings: Settings, processes: int, stop: asyncio.Event, ready: asyncio.Event | None, nats_mode: str
) -> None:
    readiness = _Readiness(processes)
    children: list[Process] = []
    try:
        try:
            for _ in range(processes):
                children.append(await _spawn(settings, readiness.write_fd, nats_mode))
        finally:
            readiness.close_write_end()  # the children hold it now
        exits = [asyncio.create_task(child.wait()) for child in children]
        if await _until_stop_or_exit(stop, readiness.all_ready, exits):
            log.info("gyoza server ready on http://%s:%s in %d processes (NATS: %s)", settings.host, settings.port,
                     processes, settings.nats_url)  # fmt: skip
            if ready is not None:
                ready.set()
            await _until_stop_or_exit(stop, asyncio.Event(), exits)
        died = [child for child in children if child.returncode is not None]
    finally:
        readiness.close()
        await _stop_all(children)
    if died and not stop.is_set():
        raise ServerProcessFailed(
            ", ".join(f"server process {child.pid} exited with {child.returncode}" for child in died)
            + "; the other processes were stopped (see the log above)"
        )


async def _until_stop_or_exit(stop: asyncio.Event, event: asyncio.Event, exits: list[asyncio.Task[int]]) -> bool:
    """Wait for ``event``, ``stop`` or a child's exit; True when ``event`` came first."""
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(event.wait())]
    try:
        await asyncio.wait([*waits, *exits], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return event.is_set() and not stop.is_set() and not any(e.done() for e in exits)


async def _spawn(settings: Settings, ready_fd: int, nats_mode: str) -> Process:
    # The settings (the API key among them) go through a pipe, not the command line anyone can read in ``ps``. Its
    # own session: a Ctrl-C in the terminal reaches only the parent, which stops the children in order (under
    # ``gyoza up``, after its worker drained). Should the parent die without stopping them (kill -9), they are killed
    # at once: a graceful stop would wait on NATS calls to an embedded nats-server that is going down with the parent,
    # and what they acknowledged is in JetStream already.
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gyoza.server.pool", str(ready_fd), nats_mode, stdin=asyncio.subprocess.PIPE,
        pass_fds=(ready_fd,), preexec_fn=functools.partial(die_with_parent, signal.SIGKILL), start_new_session=True,
    )  # fmt: skip
    assert child.stdin is not None
    child.stdin.write(settings.model_dump_json().encode())
    await child.stdin.drain()
    child.stdin.close()
    return child


async def _stop_all(children: list[Process]) -> None:
    """SIGTERM every child still running, wait for them to drain, kill those that outlast the timeout."""
    for child in children:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
    waits = [asyncio.create_task(child.wait()) for child in children]
    _, late = await asyncio.wait(waits, timeout=CHILD_STOP_TIMEOUT_S)
    if late:
        for child in children:
            if child.returncode is None:
                log.warning("server process %s did not stop in %.0f s: killed", child.pid, CHILD_STOP_TIMEOUT_S)
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
        await asyncio.wait(waits)


class _Readiness:
    """A pipe each child writes one byte to once it answers requests; ``all_ready`` is set when every child did."""

    def __init__(self, processes: int) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.all_ready = asyncio.Event()
        self._missing = processes
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.read_fd, self._on_readable)

    def _on_readable(self) -> None:
        data = os.read(self.read_fd, 256)
        self._missing -= len(data)
        if self._missing <= 0:
            self.all_ready.set()
        if not data or self._missing <= 0:  # every child closed its end, or all are in
            self._loop.remove_reader(self.read_fd)

    def close_write_end(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        self.close_write_end()
        if self.read_fd >= 0:
            self._loop.remove_reader(self.read_fd)
            os.close(self.read_fd)
            self.read_fd = -1


def child_main() -> None:
    """A pool's child: the settings on stdin; the readiness pipe's fd and the NATS mode as the arguments."""
    ready_fd, nats_mode = int(sys.argv[1]), sys.argv[2]
    settings = Settings.model_validate_json(sys.stdin.buffer.read())
    configure_logging(settings.log_level)
    try:
        asyncio.run(_child(settings, ready_fd, nats_mode))
    except CannotListen as exc:
        raise SystemExit(f"gyoza server process {os.getpid()}: {exc}") from None


async def _child(settings: Settings, ready_fd: int, nats_mode: str) -> None:
    stop = stop_on_signals()
    ready = asyncio.Event()
    listener = listen(settings.host, settings.port, share=True)
    server = asyncio.create_task(serve_on(settings, listener, stop, ready, nats_mode))
    started = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait([server, started], return_when=asyncio.FIRST_COMPLETED)
        if ready.is_set():
            with contextlib.suppress(BrokenPipeError):  # the parent stops already: serve until told to stop
                os.write(ready_fd, b".")
    finally:
        started.cancel()
        os.close(ready_fd)
    await server


if __name__ == "__main__":
    child_main()
