"""Run the server on Hypercorn until SIGTERM or SIGINT, then stop cleanly (embedded NATS included)."""

from __future__ import annotations

import asyncio
import logging

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from gyoza.processes import configure_logging, stop_on_signals
from gyoza.server.app import create_app
from gyoza.settings import Settings

log = logging.getLogger(__name__)


def run_server(settings: Settings) -> None:
    configure_logging(settings.log_level)
    asyncio.run(_serve_until_signalled(settings))


async def _serve_until_signalled(settings: Settings) -> None:
    await serve(settings, stop_on_signals())


async def serve(settings: Settings, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set; ``ready`` is set once requests are answered."""
    app = create_app(settings)
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
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
