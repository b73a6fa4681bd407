"""Run the server on Hypercorn until SIGTERM or SIGINT, then stop cleanly (embedded NATS included).

Start-up claims what must be this process's alone before anything else starts: the data dir when NATS is embedded
(``gyoza.datadir``), then the listening port. Hypercorn runs the app's start-up (NATS, the index) *before* it binds
its sockets, so the port is bound here, first, and handed to Hypercorn: "ready" is only ever said by a server that
holds its port, and a taken port fails the start before a nats-server is launched.

With ``server_workers`` above 1 this process only supervises: ``gyoza.server.pool`` runs the API in that many child
processes on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from gyoza.datadir import DataDirInUse, DataDirLock
from gyoza.processes import configure_logging, stop_on_signals
from gyoza.server.app import create_app
from gyoza.server.context import NATS_MODE_CONFIG
from gyoza.server.indexfile import remove_files
from gyoza.settings import Settings
from gyoza.worker.resources import detect_cpu

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024


class CannotListen(Exception):
    """The server's address cannot be bound (usually: another process listens on the port)."""


class ServerProcessFailed(Exception):
    """A child process of a ``--workers`` pool failed to start or died; the others were stopped."""


def run_server(settings: Settings) -> None:
    configure_logging(settings.log_level)
    try:
        asyncio.run(_serve_until_signalled(settings))
    except (DataDirInUse, CannotListen, ServerProcessFailed) as exc:
        raise SystemExit(f"gyoza server: {exc}") from None


async def _serve_until_signalled(settings: Settings) -> None:
    await serve(settings, stop_on_signals())


def server_processes(settings: Settings) -> int:
    """``server_workers``, else one process per usable core (affinity mask capped by a cgroup quota)."""
    if settings.server_workers is not None:
        return settings.server_workers
    return max(1, int(detect_cpu()))


async def serve(settings: Settings, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set; ``ready`` is set once requests are answered.

    Raises ``DataDirInUse`` or ``CannotListen`` before starting anything when the data dir or the port is taken.
    """
    from gyoza.server.pool import serve_processes

    processes = server_processes(settings)
    with DataDirLock(settings.data_dir) if settings.embedded_nats else contextlib.nullcontext():
        if processes == 1:
            listener = listen(settings.host, settings.port)
            _remove_stale_indexes(settings)
            await serve_on(settings, listener, stop, ready)
            return
        with hold_port(settings.host, settings.port) as port:
            settings = settings.model_copy(update={"port": port})
            _remove_stale_indexes(settings)
            await serve_processes(settings, processes, stop, ready)


async def serve_on(
    settings: Settings,
    listener: socket.socket,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    nats_mode: str | None = None,
) -> None:
    """Run the app on Hypercorn on ``listener`` (which Hypercorn then owns) until ``stop`` is set. ``nats_mode``:
    what ``/health`` calls the NATS when it is not this process's to say (a pool's parent runs the embedded one)."""
    app = create_app(settings)
    if nats_mode is not None:
        app.config[NATS_MODE_CONFIG] = nats_mode
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]  # Hypercorn owns the socket from here on
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 10

    @app.before_serving
    async def announce() -> None:
        log.info("gyoza server ready on http://%s:%s (NATS: %s)", settings.host, settings.port,
                 settings.nats_url or "embedded")  # fmt: skip
        if ready is not None:
            ready.set()

    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)


def listen(host: str, port: int, share: bool = False) -> socket.socket:
    """A listening TCP socket on ``host:port``, or ``CannotListen`` saying why. ``share``: one of a pool's sockets
    on the same port (SO_REUSEPORT: the kernel spreads new connections over them)."""
    sock = _bound(host, port, share)
    sock.listen(LISTEN_BACKLOG)
    return sock


@contextlib.contextmanager
def hold_port(host: str, port: int) -> Iterator[int]:
    """Hold ``host:port`` for a pool's processes while it runs; yields the port (the chosen one for port 0).

    It is first bound alone, so a port some other server listens on is refused even if that one shares it too.
    The holder then binds it shared but never listens: no connection waits on it, and nothing outside the pool
    (of another user, or without SO_REUSEPORT) can take the port while a child restarts or starts late."""
    probe = listen(host, port)
    port = probe.getsockname()[1]
    probe.close()
    holder = _bound(host, port, share=True)
    try:
        yield port
    finally:
        holder.close()


def _bound(host: str, port: int, share: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Lets a restart bind while old connections linger in TIME_WAIT; on Linux it never shares a listening port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if share:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server running there? "
                           "choose another --port / GYOZA_PORT)") from None  # fmt: skip
    return sock


def _remove_stale_indexes(settings: Settings) -> None:
    """Index files an earlier Gyoza left on this port (one per process id, never used again; today's are kept and
    reused, ``server/indexfile.py``). The port is held, so no live server of that kind uses them."""
    directory = settings.data_dir / "index"
    if directory.is_dir():
        for pattern in (f"server-{settings.port}.sqlite", f"server-{settings.port}-*.sqlite"):
            for path in directory.glob(pattern):
                remove_files(path)
