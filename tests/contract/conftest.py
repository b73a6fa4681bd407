"""The two implementations of the bus port every contract test runs against."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gyoza.bus.connection import open_bus
from gyoza.bus.embedded import EmbeddedNats
from gyoza.bus.memory import MemoryBus
from gyoza.bus.port import Bus
from gyoza.settings import Settings


@pytest.fixture(scope="module")
async def contract_nats_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A nats-server of this module's own: no Gyoza server's scheduler acts on the runs created here."""
    server = EmbeddedNats(tmp_path_factory.mktemp("contract-nats"))
    yield await server.start()
    server.stop()


@pytest.fixture(params=["memory", "nats"])
async def bus(request: pytest.FixtureRequest, contract_nats_url: str, tmp_path: Path) -> AsyncIterator[Bus]:
    opened: Bus
    if request.param == "memory":
        opened = MemoryBus()
    else:
        opened = await open_bus(Settings(nats_url=contract_nats_url, data_dir=tmp_path / "gyoza"))
    yield opened
    await opened.close()
