"""Scoped API keys (docs/keys.md): create, list and revoke them in KV, and the cache every request checks.

A token is ``gyz_<id>_<secret>``: the id names the record (``gyoza_keys/<id>``), the secret is 256 random bits of
which only the SHA-256 is stored. Each server process keeps every key in a ``KeyRing`` fed by a watch of the bucket,
so checking a key is a dict lookup and a constant-time compare of two hashes, with no NATS round trip. A revocation
is a compare-and-set write of ``revoked_at``; every replica's watch delivers it (within milliseconds), and the
revoking process applies it to its own ring at once. When the watch fails, the ring is emptied until it has
replayed the bucket again: scoped keys are refused (401) rather than trusted past a revocation nobody saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterator

from pydantic import ValidationError

from gyoza.bus.port import Bus
from gyoza.bus.records import INITIAL_VALUES_DONE, KeyChange, RecordMissing, RecordStore
from gyoza.core.roles import Principal
from gyoza.errors import GyozaError, InvalidRequest, KeyNotFound
from gyoza.schema import KEY_ID_PATTERN, ApiKeyCreated, ApiKeyIn, ApiKeyList, ApiKeyRecord, ApiKeyView, Quota, Role
from gyoza.services.clock import SYSTEM_CLOCK, Clock
from gyoza.supervision import TaskFailures, start_supervised, stop_task

log = logging.getLogger(__name__)

TOKEN_PREFIX = b"gyz_"
_TOKEN = re.compile(rb"gyz_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


def new_token() -> tuple[str, str]:
    """(id, token) of a new key."""
    key_id = secrets.token_hex(8)
    return key_id, f"{TOKEN_PREFIX.decode()}{key_id}_{secrets.token_urlsafe(32)}"


def secret_digest(token: bytes) -> bytes:
    """What is stored of a token: the SHA-256 of all of it (the id inside is public anyway)."""
    return hashlib.sha256(token).digest()


def view_of(record: ApiKeyRecord) -> ApiKeyView:
    return ApiKeyView(
        id=record.id, name=record.name, role=record.role, scope=record.scope, quota=record.quota,
        created_at=record.created_at, revoked_at=record.revoked_at,
    )  # fmt: skip


@contextlib.contextmanager
def _known(key_id: str) -> Iterator[None]:
    """404 for an id that is not a key's: one that could not be (it is a KV key: all of it is checked), or none is."""
    if not re.fullmatch(KEY_ID_PATTERN, key_id):
        raise KeyNotFound(f"no API key with id {key_id!r}")
    try:
        yield
    except RecordMissing:
        raise KeyNotFound(f"no API key with id {key_id!r}") from None


class KeyRing:
    """Every key this process knows: id -> (revision, digest, principal), the principal None once revoked."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[int, bytes, Principal | None]] = {}
        self.names: dict[str, str] = {}  # key id -> name, for the scheduler's pending reasons
        self.quotas: dict[str, Quota] = {}  # key id -> its quota, for the scheduler

    def principal(self, token: bytes) -> Principal | None:
        """The live key a token is, or None (malformed, unknown, revoked, or the wrong secret)."""
        found = _TOKEN.fullmatch(token) if token.startswith(TOKEN_PREFIX) else None
        entry = self._keys.get(found.group(1).decode()) if found else None
        if entry is None or entry[2] is None:
            return None
        return entry[2] if hmac.compare_digest(secret_digest(token), entry[1]) else None

    def apply(self, record: ApiKeyRecord, revision: int) -> None:
        """Keep the newer of what is held and what came (this process's own write may be ahead of the watch)."""
        held = self._keys.get(record.id)
        if held is not None and held[0] >= revision:
            return
        live = None if record.revoked_at is not None else Principal(record.role, record.scope, record.id)
        self._keys[record.id] = (revision, bytes.fromhex(record.token_sha256), live)
        self.names[record.id] = record.name
        if record.quota is None:
            self.quotas.pop(record.id, None)
        else:
            self.quotas[record.id] = record.quota

    def quota_of(self, key_id: str) -> tuple[Quota, str] | None:
        """The key's quota and its name (for the scheduler), if it has one."""
        quota = self.quotas.get(key_id)
        return None if quota is None else (quota, self.names.get(key_id, key_id))

    def forget(self, key_id: str) -> None:
        self._keys.pop(key_id, None)
        self.quotas.pop(key_id, None)

    def clear(self) -> None:
        """Refuse every scoped key (the watch is down). Quotas stay: runs still count against the quota they had."""
        self._keys.clear()


class KeyService:
    """The only writer of ``gyoza_keys``, and the watch that feeds this process's ``KeyRing``."""

    def __init__(self, bus: Bus, ring: KeyRing, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = RecordStore(bus.keys, ApiKeyRecord)
        self.ring = ring
        self.clock = clock
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def create(self, body: ApiKeyIn) -> ApiKeyCreated:
        # 64 random bits of id: a clash is not expected in the life of a cluster (create() would refuse it, a 500).
        key_id, token = new_token()
        record = ApiKeyRecord(
            id=key_id, name=body.name, role=body.role, scope=body.scope(), quota=body.quota,
            token_sha256=secret_digest(token.encode()).hex(), created_at=self.clock.utcnow(),
        )  # fmt: skip
        revision = await self.store.create(key_id, record)
        self.ring.apply(record, revision)
        return ApiKeyCreated(**view_of(record).model_dump(), token=token)

    async def list(self) -> ApiKeyList:
        """Every key, revoked ones included, oldest first (a full read: the bucket holds one record per key)."""
        records = [record async for record in self.store.values()]
        return ApiKeyList(data=[view_of(r) for r in sorted(records, key=lambda r: (r.created_at, r.id))])

    async def get(self, key_id: str) -> ApiKeyView:
        with _known(key_id):
            record, _ = await self.store.get(key_id)
        return view_of(record)

    async def revoke(self, key_id: str) -> ApiKeyView:
        """Mark the key revoked (idempotent: a second revocation keeps the first time)."""
        now = self.clock.utcnow()
        with _known(key_id):
            record, revision, _ = await self.store.mutate(
                key_id, lambda r: None if r.revoked_at is not None else r.model_copy(update={"revoked_at": now})
            )
        self.ring.apply(record, revision)
        return view_of(record)

    async def set_quota(self, key_id: str, quota: Quota | None) -> ApiKeyView:
        """Give a submit key a quota, change it, or lift it (None); runs placed already keep their places."""
        with _known(key_id):
            record, _ = await self.store.get(key_id)
        if record.role is not Role.SUBMIT:
            raise InvalidRequest(
                f"key {key_id} has the {record.role.value} role: only a submit key's runs are limited by a quota",
                details=[{"field": "quota", "problem": "only for submit keys"}],
            )
        with _known(key_id):
            record, revision, _ = await self.store.mutate(
                key_id, lambda r: None if r.quota == quota else r.model_copy(update={"quota": quota})
            )
        self.ring.apply(record, revision)
        return view_of(record)

    async def follow(self, failures: TaskFailures) -> None:
        """Start the watch and return once the ring holds every key (its first replay failing fails the start)."""
        self._task = await start_supervised("keys-cache", self._watch, failures, self.ready)

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _watch(self) -> None:
        try:
            async for change in self.store.bucket.watch():
                if change is INITIAL_VALUES_DONE:
                    self.ready.set()
                else:
                    self._apply(change)
        finally:
            self.ring.clear()  # no watch, no news of revocations: refuse scoped keys until the replay is in

    def _apply(self, change: KeyChange) -> None:
        if change.value is None:
            self.ring.forget(change.key)
            return
        try:
            self.ring.apply(ApiKeyRecord.model_validate_json(change.value), change.revision)
        except (ValidationError, GyozaError) as exc:  # unreadable here (e.g. a newer schema): refuse that key
            log.warning("keys cache skips %s: %s", change.key, exc)
            self.ring.forget(change.key)
