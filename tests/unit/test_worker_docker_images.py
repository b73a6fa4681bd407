"""The Docker runtime checks an image on the engine once per worker life, not once per attempt, and still pulls an
image removed since (the engine client faked below the runtime: no Docker here)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from gyoza.schema import PullCredential
from gyoza.worker.runtimes.base import LaunchSpec, LogCapture
from gyoza.worker.runtimes.docker import DockerRuntime

IMAGE = "gyoza-test/pyop:latest"


class FakeContainer:
    short_id = "abc123"

    def start(self) -> None:
        pass

    def logs(self, **options: Any) -> list[bytes]:
        return []

    def stats(self, **options: Any) -> list[dict[str, Any]]:
        return []


class FakeImages:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def get(self, image: str) -> object:
        self.engine.calls.append("images.get")
        if image not in self.engine.images:
            raise docker.errors.ImageNotFound(f"no such image: {image}")
        return object()

    def pull(self, image: str, auth_config: dict[str, str] | None = None) -> object:
        self.engine.calls.append("images.pull")
        self.engine.logins.append(auth_config)
        self.engine.images.add(image)
        return object()


class FakeContainers:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def create(self, image: str, **options: Any) -> FakeContainer:
        self.engine.calls.append("containers.create")
        if image not in self.engine.images:
            raise docker.errors.ImageNotFound(f"no such image: {image}")
        return FakeContainer()


class FakeEngine:
    def __init__(self) -> None:
        self.images: set[str] = {IMAGE}
        self.calls: list[str] = []
        self.logins: list[dict[str, str] | None] = []
        self.containers = FakeContainers(self)
        self.images_api = FakeImages(self)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    fake = FakeEngine()
    client = type("Client", (), {"containers": fake.containers, "images": fake.images_api})()
    monkeypatch.setattr(docker, "from_env", lambda **options: client)
    return fake


def spec(tmp_path: Path, attempt: int) -> LaunchSpec:
    return LaunchSpec(run_id="r1", attempt=attempt, worker_id="w1", image=IMAGE, command=None, env={}, cpu=1,
                      ram_mb=64, gpu_ids=[], io_dir=tmp_path)  # fmt: skip


async def attempt(runtime: DockerRuntime, tmp_path: Path, number: int) -> None:
    await runtime.ensure_image(IMAGE)
    await runtime.launch(spec(tmp_path, number), LogCapture())


async def test_an_image_is_checked_once_then_created_from_directly(engine: FakeEngine, tmp_path: Path) -> None:
    runtime = DockerRuntime()
    for number in (1, 2, 3):
        await attempt(runtime, tmp_path, number)
    assert engine.calls == ["images.get"] + ["containers.create"] * 3


async def test_an_image_removed_since_is_pulled_again(engine: FakeEngine, tmp_path: Path) -> None:
    runtime = DockerRuntime(pull="if-missing")
    await attempt(runtime, tmp_path, 1)
    engine.images.clear()  # docker image rm / prune between two attempts
    engine.calls.clear()
    await attempt(runtime, tmp_path, 2)
    assert engine.calls == ["containers.create", "images.get", "images.pull", "containers.create"]


async def test_a_registry_login_goes_with_every_pull_of_the_image(engine: FakeEngine, tmp_path: Path) -> None:
    login = PullCredential(registry="ghcr.io", username="ci", password="p4ss")
    runtime = DockerRuntime(pull="if-missing")
    engine.images.clear()
    await runtime.ensure_image(IMAGE, login)
    engine.images.clear()  # removed before the create: pulled again, with the same login
    await runtime.launch(replace(spec(tmp_path, 1), login=login), LogCapture())
    assert engine.logins == [{"username": "ci", "password": "p4ss"}] * 2
    await DockerRuntime(pull="always").ensure_image(IMAGE)
    assert engine.logins[-1] is None  # no login stored for the registry: an anonymous pull
