"""Scoped API keys (docs/keys.md): what an admin sends to create one, what KV stores, what the API shows."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, StringConstraints, model_validator

from gyoza.errors import InvalidRequest
from gyoza.schema._base import Input, OpName, Part, Record, StoredRecord, WorkerId

# A key's id: readable inside its token (``gyz_<id>_<secret>``) and the KV key of its record.
KEY_ID_PATTERN = r"^[0-9a-f]{16}$"
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
KeyId = Annotated[str, StringConstraints(pattern=KEY_ID_PATTERN)]
KeyName = Annotated[str, StringConstraints(pattern=KEY_NAME_PATTERN)]


class Role(StrEnum):
    ADMIN = "admin"
    SUBMIT = "submit"
    READ = "read"
    WORKER = "worker"


class KeyScope(Record):
    """What a key may act on beyond its role: a submit key's definitions (None: any, and ad hoc runs), a worker
    key's one worker id."""

    definitions: list[str] | None = None
    worker_id: str | None = None


class Quota(Part):
    """The most a key's runs may hold at once (ASSIGNED or RUNNING), summed over them; a field left out is not
    limited. VRAM counts per GPU held (a run of 2 GPUs with 16 GB each holds 32 GB)."""

    gpus: Annotated[int, Field(ge=0, le=100_000)] | None = None
    vram_mb: Annotated[int, Field(ge=0, le=1 << 40)] | None = None
    cpu: Annotated[float, Field(ge=0, le=1_000_000)] | None = None
    ram_mb: Annotated[int, Field(ge=0, le=1 << 40)] | None = None
    # Its share against other keys' runs of equal priority: a key of weight 2 gets twice the places of one of 1.
    weight: Annotated[int, Field(ge=1, le=1000)] = 1


class ApiKeyIn(Input):
    """POST /keys."""

    name: KeyName = Field(description="a label for people (who holds the key); need not be unique")
    role: Role
    definitions: list[OpName] | None = Field(
        None, min_length=1, max_length=100, description="submit role only: the only definitions it may create runs of"
    )
    worker_id: WorkerId | None = Field(None, description="worker role only, and required there: the worker it acts as")
    quota: Quota | None = Field(None, description="submit role only: the most its runs may hold at once")

    @model_validator(mode="after")
    def _scope_fits_the_role(self) -> Self:
        problems = []
        if self.definitions is not None and self.role is not Role.SUBMIT:
            problems.append({"field": "definitions", "problem": "only a submit key is limited to definitions"})
        if self.role is Role.WORKER and self.worker_id is None:
            problems.append({"field": "worker_id", "problem": "required for the worker role"})
        if self.quota is not None and self.role is not Role.SUBMIT:
            problems.append({"field": "quota", "problem": "only a submit key's runs are limited by a quota"})
        if self.role is not Role.WORKER and self.worker_id is not None:
            problems.append({"field": "worker_id", "problem": "only a worker key is bound to a worker"})
        if problems:
            raise InvalidRequest(problems[0]["problem"], problems)
        return self

    def scope(self) -> KeyScope:
        definitions = sorted(set(self.definitions)) if self.definitions is not None else None
        return KeyScope(definitions=definitions, worker_id=self.worker_id)


class QuotaIn(Input):
    """PUT /keys/{key_id}/quota: the key's new quota, or null to lift it."""

    quota: Quota | None


class ApiKeyRecord(StoredRecord):
    """KV ``gyoza_keys/<id>``. Only the SHA-256 of the token is kept, never the token: its secret is 256 random
    bits, so a fast unsalted hash is enough (a slow, salted password hash guards guessable passwords; nothing here
    can be guessed or looked up in a table), and the per-request check stays one hash and one constant-time
    compare."""

    id: str
    name: str
    role: Role
    scope: KeyScope = Field(default_factory=KeyScope)
    token_sha256: str
    quota: Quota | None = None
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyView(Record):
    """A key as the API shows it: never its secret or hash."""

    id: str
    name: str
    role: Role
    scope: KeyScope
    quota: Quota | None = None
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyView):
    """POST /keys: the key and, this once only, its token (it cannot be shown again: only its hash is stored)."""

    token: str = Field(description="send as X-API-Key; shown only in this answer")


class ApiKeyList(Record):
    data: list[ApiKeyView]
