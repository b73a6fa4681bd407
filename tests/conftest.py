"""Shared fixtures: one real nats-server and one Gyoza server per test session, plus clients.

Tests share the server, so each test uses its own definition names (``unique_name``) and never assumes an empty
cluster. Tests that restart or kill servers start their own (``GyozaServer``) in their own temp dir.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from gyoza.bus.embedded import EmbeddedNats
from tests.processes import API_KEY, GyozaServer

pytest_plugins = ["tests.fleet_fixtures", "tests.api_checks"]


@pytest.fixture(scope="session")
async def nats_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    url = await server.start()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def server(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GyozaServer]:
    gyoza = GyozaServer(tmp_path_factory.mktemp("gyoza"), nats_url).start()
    yield gyoza
    gyoza.stop()


@pytest.fixture
async def client(server: GyozaServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=30) as http:
        yield http


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    connection = await nats.connect(nats_url)
    yield connection
    await connection.close()


@pytest.fixture
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture
def unique_name() -> str:
    return "op-" + uuid.uuid4().hex[:12]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "gyoza"


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel ``pip wheel`` builds from this checkout (built once per session: it takes seconds)."""
    out = tmp_path_factory.mktemp("wheel")
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(root)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("gyoza-*.whl")
    return zipfile.ZipFile(built)
