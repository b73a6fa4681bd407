"""Open a nats-py connection: reconnecting forever, with no publish ever sent late after a reconnect."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client

from gyoza.bus.translate import translate_errors

log = logging.getLogger(__name__)

# How nats-py connects. ``pending_size=0``: no publish buffer while reconnecting. By default nats-py keeps publishes
# made while disconnected (2 MiB) and sends them once it is connected again, long after their callers were answered
# 503; those requests then landed anyway (issue 15 item 3). Without the buffer such a publish fails at once and the
# caller gets its 503 at once. Pings every 5 s find a silent (not closed) connection within ~15 s, not minutes.
_CONNECT_OPTIONS: dict[str, Any] = {
    "pending_size": 0,
    "max_reconnect_attempts": -1,
    "reconnect_time_wait": 0.5,
    "ping_interval": 5,
    "max_outstanding_pings": 3,
}


async def connect(url: str, creds: str | None, name: str, reconnected: Callable[[], None] | None = None) -> Client:
    """Connect to the nodes listed in ``url`` (comma-separated) and keep reconnecting forever if the link drops;
    ``reconnected`` is called after each reconnect (inside nats-py's reconnect loop, so it must not block)."""
    nc = Client()

    async def on_disconnect() -> None:
        if not nc.is_closed:  # closing (server shutdown) also ends here
            log.warning("lost the connection to NATS; reconnecting")
            _drop_unsent_publishes(nc)

    async def on_reconnect() -> None:
        log.warning("reconnected to NATS at %s", nc.connected_url.netloc if nc.connected_url else "?")
        if reconnected is not None:
            reconnected()

    async def on_error(exc: Exception) -> None:
        # Every failed reconnect attempt lands here; the disconnect and the reconnect are logged above.
        log.debug("nats: %s: %s", type(exc).__name__, exc)

    options = dict(_CONNECT_OPTIONS, name=name, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect)
    if creds:
        options["user_credentials"] = creds
    with translate_errors():
        await nc.connect([part.strip() for part in url.split(",") if part.strip()], error_cb=on_error, **options)
    return nc


def _drop_unsent_publishes(nc: Client) -> None:
    """Forget publishes still queued when the connection broke, so a reconnect never sends them late.

    Even with no reconnect buffer, a publish queued just before the link broke stays in nats-py's pending list and
    would go out after the reconnect; its caller times out (503) meanwhile. nats-py has no option for this, so its
    pending list is filtered here (subscriptions are replayed by nats-py itself, other commands are kept).
    """
    pending = getattr(nc, "_pending", None)
    if not isinstance(pending, list):
        return
    kept = [command for command in pending if not command.startswith((b"PUB ", b"HPUB "))]
    if len(kept) != len(pending):
        log.warning("dropped %d publishes that had not left before the NATS connection broke", len(pending) - len(kept))
        nc._pending = kept
        nc._pending_data_size = sum(len(command) for command in kept)
