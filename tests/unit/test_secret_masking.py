"""The pieces of secrets below the HTTP layer: the log capture writes ``***`` for every value however the op's
output arrives, and an image reference names the registry whose login pulls it, as Docker reads it."""

from __future__ import annotations

import pytest

from gyoza.services.secrets import registry_of
from gyoza.worker.runtimes.base import LogCapture


def test_every_value_is_masked_whatever_the_chunking_and_stream() -> None:
    logs = LogCapture(masks=["pw-123", "line one\nline two"])
    logs.append(b"user=a pw-")  # a value split across two reads of stdout
    logs.append(b"123 ok\n")
    logs.append(b"key: line one\n", stderr=True)
    logs.append(b"then line two, pw-123 again", stderr=True)  # unfinished: the stderr tail reads it as it is
    assert "***" in logs.stderr_tail() and "pw-123" not in logs.stderr_tail()
    logs.close()
    text = logs.text().decode()
    assert "pw-123" not in text and "line one" not in text and "line two" not in text
    assert "user=a *** ok" in text and "key: ***" in text and "then ***, *** again" in text


def test_masks_added_later_apply_to_what_is_kept_from_then_on() -> None:
    logs = LogCapture()
    logs.mask(["", "   "])  # blank values mask nothing (they would mask everything)
    logs.append(b"before s3cret\n")
    logs.mask(["s3cret"])
    logs.append(b"after s3cret\n")
    assert logs.text().decode().splitlines()[-1].endswith("after ***")


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("python:3.12-slim", "docker.io"),
        ("acme/thumbnailer:1.4", "docker.io"),
        ("ghcr.io/acme-ml/thumbnailer:1.4.2", "ghcr.io"),
        ("registry.example:5000/team/op", "registry.example:5000"),
        ("localhost/op:dev", "localhost"),
        ("localhost:5000/op", "localhost:5000"),
    ],
)
def test_an_image_names_its_registry_as_docker_reads_it(image: str, registry: str) -> None:
    assert registry_of(image) == registry
