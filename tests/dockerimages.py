"""Which Docker test images exist, for the tests that need them (scripts/build-test-images builds them).

``require_images()`` skips a test with a clear reason when Docker or an image is missing, so a laptop without Docker
still runs everything else. CI sets ``GYOZA_REQUIRE_DOCKER=1``: then a missing engine or image fails the test
instead, so Docker tests can never be skipped silently there.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

import docker
import pytest
from docker.errors import DockerException, ImageNotFound

BUSYBOX = "gyoza-test/busybox:latest"
PYTHON = "gyoza-test/python:bookworm"
PYOP = "gyoza-test/pyop:latest"
ALL_IMAGES = (BUSYBOX, PYTHON, PYOP)

_BUILD_HINT = "run scripts/build-test-images"


@contextmanager
def docker_client() -> Iterator[docker.DockerClient]:
    """A docker SDK client for the local engine, closed afterwards."""
    client = docker.from_env(timeout=30)
    try:
        yield client
    finally:
        client.close()


@functools.cache
def docker_available() -> bool:
    """Whether the Docker engine answers (checked once per test session)."""
    try:
        with docker_client() as client:
            return bool(client.ping())
    except DockerException:
        return False


def missing_images(*images: str) -> list[str]:
    """The images (default: all test images) that the engine does not have. Requires a reachable engine."""
    missing = []
    with docker_client() as client:
        for image in images or ALL_IMAGES:
            try:
                client.images.get(image)
            except ImageNotFound:
                missing.append(image)
    return missing


def require_images(*images: str) -> None:
    """Skip the calling test unless Docker and ``images`` (default: all test images) are available.

    With ``GYOZA_REQUIRE_DOCKER=1`` the test fails instead of skipping.
    """
    if not docker_available():
        reason = "the Docker engine is not reachable (docker info fails)"
    else:
        missing = missing_images(*images)
        reason = f"Docker test images missing: {', '.join(missing)} ({_BUILD_HINT})" if missing else ""
    if not reason:
        return
    if os.environ.get("GYOZA_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{reason}; GYOZA_REQUIRE_DOCKER=1 forbids skipping", pytrace=False)
    pytest.skip(reason)
