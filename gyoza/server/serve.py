"""Run the server on Hypercorn until SIGTERM or SIGINT, then stop cleanly (embedded NATS included)."""

from __future__ import annotations

import asyncio
import logging
import signal

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from gyoza.server.app import create_app
from gyoza.settings import Settings

log = logging.getLogger(__name__)


def run_server(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    app = create_app(settings)
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 10
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    @app.before_serving
    async def announce() -> None:
        log.info("gyoza server ready on http://%s:%s (NATS: %s)", settings.host, settings.port,
                 settings.nats_url or "embedded")  # fmt: skip

    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)
