"""Fixtures for scheduler tests with simulated workers (loaded by tests/conftest.py as a pytest plugin).

``cluster`` is one private nats-server + Gyoza server per test module (never the session server, whose scheduler
must not meet other tests' runs), ``http`` a client of it; ``fleet`` closes the simulated workers a test starts;
``tag`` keeps one test's runs off another test's workers; ``pyop_image`` skips (or fails in CI) without the images.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.dockerimages import PYOP, require_images
from tests.simworker import Cluster, Fleet, unique_tag


@pytest.fixture(scope="module")
async def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    started = await Cluster(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
async def http(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with cluster.client() as client:
        yield client


@pytest.fixture
async def fleet(cluster: Cluster) -> AsyncIterator[Fleet]:
    workers = Fleet(cluster.url)
    yield workers
    await workers.close()


@pytest.fixture(scope="module")
def pyop_image() -> None:
    require_images(PYOP)


@pytest.fixture
def tag() -> str:
    return unique_tag()
