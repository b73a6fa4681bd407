"""Can NATS serve this server right now? For ``GET /health``, cheap enough for every load balancer poll.

The connection state is free to read. Whether JetStream answers is not, and a connected server can still be unable to
write: a cluster that lost its quorum, or a stream with no leader. That is checked with one stream-info request on
the runs bucket (which must name a leader), at most every ``CHECK_EVERY_S`` and bounded by ``CHECK_TIMEOUT_S``;
health checks in between share its answer. A reconnect invalidates it, so no answer from before an outage is reused.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.client import Client

from gyoza.bus.port import NatsState

log = logging.getLogger(__name__)

CHECK_EVERY_S = 2.0
CHECK_TIMEOUT_S = 1.0


class JetStreamProbe:
    def __init__(self, nc: Client, stream: str) -> None:
        self._nc = nc
        self._jsm = nc.jsm(timeout=CHECK_TIMEOUT_S)
        self._stream = stream
        self._lock = asyncio.Lock()
        self._checked_at = float("-inf")
        self._checked_on = -1  # the reconnect count the last answer was got on
        self._answered = False

    def _reconnects(self) -> int:
        return int(self._nc.stats["reconnects"])

    async def state(self) -> NatsState:
        connected = self._nc.is_connected
        jetstream = connected and await self._jetstream_answers()
        return NatsState(connected, jetstream, self._reconnects())

    def _fresh(self) -> bool:
        return self._checked_on == self._reconnects() and time.monotonic() - self._checked_at < CHECK_EVERY_S

    async def _jetstream_answers(self) -> bool:
        if self._fresh():
            return self._answered
        async with self._lock:
            if not self._fresh():  # else another health check just asked
                reconnects = self._reconnects()
                self._answered = await self._stream_has_leader()
                self._checked_at, self._checked_on = time.monotonic(), reconnects
        return self._answered

    async def _stream_has_leader(self) -> bool:
        try:
            info = await self._jsm.stream_info(self._stream)
        except Exception as exc:  # whatever the reason (timeout, no meta leader, no stream), it cannot serve
            log.info("JetStream check failed: %s: %s", type(exc).__name__, exc)
            return False
        # Without a quorum a replica still answers stream info, from its own state, with no leader named.
        if info.cluster is not None and not info.cluster.leader:
            log.info("JetStream check failed: %s has no leader", self._stream)
            return False
        return True
