"""Secrets (docs/secrets.md): values an admin stores once and definitions reference by name, and per-registry pull
credentials. What KV stores holds the values; what the API shows never does."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from gyoza.schema._base import Input, Record, StoredRecord

# No dots: a name is one token of its KV key (``secret.<name>``).
SECRET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
SecretName = Annotated[str, StringConstraints(pattern=SECRET_NAME_PATTERN)]
# A registry as an image reference names it: a host with a dot or a port, or localhost (``ghcr.io``,
# ``registry.example:5000``); images without one come from Docker Hub, ``docker.io``.
REGISTRY_PATTERN = r"^(localhost|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*:[0-9]{1,5})$"
Registry = Annotated[str, StringConstraints(pattern=REGISTRY_PATTERN, max_length=253)]
# 64 KiB: a certificate chain or a service-account JSON fits; an environment variable should not be much more.
MAX_SECRET_BYTES = 64 * 1024
SecretValue = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_SECRET_BYTES, pattern=r"^[^\x00]*$"), Field(repr=False)
]


class SecretIn(Input):
    """PUT /secrets/{name}."""

    value: SecretValue = Field(description="the value, given to the op as an environment variable; never shown")


class SecretRecord(StoredRecord):
    """KV ``gyoza_secrets/secret.<name>``."""

    name: str
    value: str = Field(repr=False)
    created_at: datetime
    updated_at: datetime


class SecretView(Record):
    """A secret as the API shows it: never its value."""

    name: str
    created_at: datetime
    updated_at: datetime


class SecretList(Record):
    data: list[SecretView]


class RegistryCredentialIn(Input):
    """PUT /registries/{registry}."""

    username: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]*$")]
    password: SecretValue = Field(description="the password or token; never shown")


class RegistryCredential(StoredRecord):
    """KV ``gyoza_secrets/registry.<escaped registry>``: what workers pull that registry's images with."""

    registry: str
    username: str
    password: str = Field(repr=False)
    created_at: datetime
    updated_at: datetime


class RegistryView(Record):
    registry: str
    username: str
    created_at: datetime
    updated_at: datetime


class RegistryList(Record):
    data: list[RegistryView]


class PullCredential(Record):
    """In an assignment: how the worker logs in to pull the run's image."""

    registry: str
    username: str
    password: str = Field(repr=False)
