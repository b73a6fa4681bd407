"""The one mapping of NATS errors to Gyoza's: every nats-py call in ``gyoza.bus`` runs inside ``translate_errors``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import nats.errors
import nats.js.errors

from gyoza.errors import Unavailable

# Errors that mean "NATS cannot serve this right now": the caller may retry shortly (503 UNAVAILABLE, Retry-After).
_NOT_CONNECTED = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.OutboundBufferLimitError,  # a publish while disconnected: refused at once, never buffered
    nats.errors.StaleConnectionError,
    nats.errors.NoServersError,
    ConnectionError,  # a socket error nats-py let through (reset, broken pipe)
)
_NO_ANSWER = (
    TimeoutError,  # nats.errors.TimeoutError, nats-py's bare asyncio timeouts, fetch and flush timeouts
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,  # no stream leader took the publish (election, lost node)
    nats.js.errors.ServiceUnavailableError,  # JetStream's 503; a pull fetch raises it without a code
)
# JetStream API errors (err_code) a cluster gives while it cannot serve: no leader, not assigned yet, offline, raft.
_CLUSTER_BUSY = frozenset({10007, 10009, 10041, 10118, 10119, 10194, 10195})


def _is_unavailable(exc: BaseException) -> bool:
    """Whether a NATS error means "not available now" rather than a refusal of this request."""
    if isinstance(exc, _NOT_CONNECTED + _NO_ANSWER):
        return True
    if not isinstance(exc, nats.js.errors.APIError):
        return False
    # Some subclasses (KeyNotFoundError, KeyWrongLastSequenceError) never set code and err_code.
    return getattr(exc, "code", None) == 503 or getattr(exc, "err_code", None) in _CLUSTER_BUSY


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """The one mapping of NATS's "not available now" errors to ``Unavailable`` (503); every NATS call in
    ``gyoza.bus`` runs inside it, so none of them reaches a caller as a 500. Other errors pass unchanged."""
    try:
        yield
    except Exception as exc:
        if not _is_unavailable(exc):
            raise
        if isinstance(exc, _NOT_CONNECTED):
            raise Unavailable("not connected to NATS; retry shortly") from exc
        detail = getattr(exc, "description", None) or ""
        raise Unavailable(
            f"NATS JetStream did not answer ({type(exc).__name__}{': ' + detail if detail else ''}); retry shortly"
        ) from exc
