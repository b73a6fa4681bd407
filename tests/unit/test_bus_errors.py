"""NATS errors that mean "not available now" become ``Unavailable`` (503) in one place, ``translate_errors``; every
other error passes unchanged (issue 15 item 2). And a broken connection never sends a publish late."""

from __future__ import annotations

import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client

from gyoza.bus.link import _drop_unsent_publishes
from gyoza.bus.translate import translate_errors
from gyoza.errors import Unavailable

NOT_AVAILABLE_NOW = [
    nats.errors.TimeoutError(),
    TimeoutError(),  # nats-py's batch fetch lets a bare asyncio timeout through
    nats.errors.NoRespondersError(),
    nats.js.errors.NoStreamResponseError(),
    nats.errors.ConnectionClosedError(),
    nats.errors.ConnectionReconnectingError(),
    nats.errors.ConnectionDrainingError(),
    nats.errors.OutboundBufferLimitError(),
    nats.errors.StaleConnectionError(),
    nats.errors.NoServersError(),
    nats.js.errors.FetchTimeoutError(),
    nats.js.errors.ServiceUnavailableError(),  # as a pull fetch raises it, with no code
    ConnectionResetError(),
    nats.js.errors.ServiceUnavailableError(
        code=503, err_code=10008, description="JetStream system temporarily unavailable"
    ),
    nats.js.errors.ServerError(code=500, err_code=10009, description="JetStream cluster can not handle request"),
    nats.js.errors.APIError(code=500, err_code=10118, description="stream is offline"),
]

REFUSALS = [
    nats.js.errors.KeyWrongLastSequenceError(description="wrong last sequence: 3"),
    nats.js.errors.KeyNotFoundError(),
    nats.js.errors.BadRequestError(code=400, err_code=10003, description="bad request"),
    nats.js.errors.ServerError(code=500, err_code=10049, description="stream create failed"),
    nats.errors.BadSubjectError(),
    nats.errors.MaxPayloadError(),
]


@pytest.mark.parametrize("error", NOT_AVAILABLE_NOW, ids=lambda e: type(e).__name__)
def test_not_available_now_is_a_503(error: Exception) -> None:
    with pytest.raises(Unavailable) as raised, translate_errors():
        raise error
    assert raised.value.status == 503 and raised.value.code == "UNAVAILABLE"
    assert raised.value.__cause__ is error


@pytest.mark.parametrize("error", REFUSALS, ids=lambda e: type(e).__name__)
def test_other_errors_pass_unchanged(error: Exception) -> None:
    with pytest.raises(type(error)) as raised, translate_errors():
        raise error
    assert raised.value is error


def test_publishes_queued_when_the_link_broke_are_dropped_and_the_rest_kept() -> None:
    nc = Client()
    nc._pending = [b"PUB a  2\r\nxy\r\n", b"SUB _INBOX.x.*  1\r\n", b"HPUB b  12 14\r\nNATS/1.0\r\n\r\nxy\r\n"]
    nc._pending_data_size = sum(len(command) for command in nc._pending)
    _drop_unsent_publishes(nc)
    assert nc._pending == [b"SUB _INBOX.x.*  1\r\n"]
    assert nc._pending_data_size == len(b"SUB _INBOX.x.*  1\r\n")
