"""Run the server on Hypercorn until SIGTERM or SIGINT, then stop cleanly (embedded NATS included).

Start-up claims what must be this process's alone before anything else starts: the data dir when NATS is embedded
(``gyoza.datadir``), then the listening port. Hypercorn runs the app's start-up (NATS, the index) *before* it binds
its sockets, so the port is bound here, first, and handed to Hypercorn: "ready" is only ever said by a server that
holds its port, and a taken port fails the start before a nats-server is launched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from gyoza.datadir import DataDirInUse, DataDirLock
from gyoza.processes import configure_logging, stop_on_signals
from gyoza.server.app import create_app
from gyoza.settings import Settings

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024


class CannotListen(Exception):
    """The server's address cannot be bound (usually: another process listens on the port)."""


def run_server(settings: Settings) -> None:
    configure_logging(settings.log_level)
    try:
        asyncio.run(_serve_until_signalled(settings))
    except (DataDirInUse, CannotListen) as exc:
        raise SystemExit(f"gyoza server: {exc}") from None


async def _serve_until_signalled(settings: Settings) -> None:
    await serve(settings, stop_on_signals())


async def serve(settings: Settings, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set; ``ready`` is set once requests are answered.

    Raises ``DataDirInUse`` or ``CannotListen`` before starting anything when the data dir or the port is taken.
    """
    with DataDirLock(settings.data_dir) if settings.embedded_nats else contextlib.nullcontext():
        listener = listen(settings.host, settings.port)
        app = create_app(settings)
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


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, or ``CannotListen`` saying why."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Lets a restart bind while old connections linger in TIME_WAIT; on Linux it never shares a listening port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server running there? "
                           "choose another --port / GYOZA_PORT)") from None  # fmt: skip
    return sock
