"""Secrets and registry credentials (docs/secrets.md): the only reader and writer of ``gyoza_secrets``.

Admins set values; definitions name them (``secrets: {ENV_NAME: secret_name}``); a run copies the names, never a
value. Values leave the store only through ``release``, which fills the assignment of one attempt for the worker it
is assigned to: the scheduler's push to that worker and that worker's claim. Every server process follows the
bucket, so a release and a list are dict look-ups (a secret set a moment ago on another replica, not in yet, is
read from KV for a release).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TypeVar

from pydantic import ValidationError

from gyoza.bus import names
from gyoza.bus.port import INITIAL_VALUES_DONE, Bus, KeyChange
from gyoza.bus.records import RecordExists, RecordMissing, RecordStore
from gyoza.errors import GyozaError, InvalidRequest, RegistryNotFound, SecretNotFound
from gyoza.schema import (
    Assignment,
    PullCredential,
    RegistryCredential,
    RegistryCredentialIn,
    RegistryList,
    RegistryView,
    SecretIn,
    SecretList,
    SecretRecord,
    SecretView,
)
from gyoza.services.clock import SYSTEM_CLOCK, Clock
from gyoza.supervision import TaskFailures, start_supervised, stop_task

log = logging.getLogger(__name__)
R = TypeVar("R", SecretRecord, RegistryCredential)

SECRET_PREFIX = "secret."
REGISTRY_PREFIX = "registry."
DOCKER_HUB = "docker.io"


def secret_key(name: str) -> str:
    return SECRET_PREFIX + name  # a secret name is a valid key token as it is


def registry_key(registry: str) -> str:
    return REGISTRY_PREFIX + names.key_token(registry)


def registry_of(image: str) -> str:
    """The registry an image reference pulls from, as Docker reads it: the first path part when it has a dot or a
    port or is ``localhost``, else Docker Hub."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


class SecretService:
    def __init__(self, bus: Bus, clock: Clock = SYSTEM_CLOCK) -> None:
        self.secrets = RecordStore(bus.secrets, SecretRecord)
        self.registries = RecordStore(bus.secrets, RegistryCredential)
        self.clock = clock
        self.ready = asyncio.Event()
        self._values: dict[str, tuple[int, SecretRecord]] = {}  # secret name -> (revision, record)
        self._logins: dict[str, tuple[int, RegistryCredential]] = {}  # registry -> (revision, credential)
        self._task: asyncio.Task[None] | None = None

    # --- secrets -----------------------------------------------------------------------------------------------

    async def set(self, name: str, body: SecretIn) -> tuple[SecretView, bool]:
        """Store a value (a new secret, or a new value for one); returns (view, created)."""
        now = self.clock.utcnow()
        fresh = SecretRecord(name=name, value=body.value, created_at=now, updated_at=now)
        record, revision, created = await _put(
            self.secrets, secret_key(name), fresh, {"value": body.value, "updated_at": now}
        )
        self._keep(name, revision, record)
        return _secret_view(record), created

    async def get(self, name: str) -> SecretView:
        try:
            return _secret_view((await self.secrets.get(secret_key(name)))[0])
        except RecordMissing:
            raise SecretNotFound(f"no secret named {name!r}") from None

    async def list(self) -> SecretList:
        """Every secret, by name (from this process's cache of the bucket)."""
        return SecretList(data=[_secret_view(self._values[name][1]) for name in sorted(self._values)])

    async def delete(self, name: str) -> None:
        """Delete a secret; runs that name it fail at their next assignment, saying which is missing."""
        await self.get(name)  # 404 for none
        await self.secrets.delete(secret_key(name))
        self._values.pop(name, None)

    async def check_named(self, references: dict[str, str]) -> None:
        """400 naming each ``secrets.<ENV>`` whose secret does not exist (a definition is deployed with them)."""
        problems = []
        for env, name in sorted(references.items()):
            if not await self._exists(name):
                problems.append({"field": f"secrets.{env}", "problem": f"no secret named {name!r}; set it first"})
        if problems:
            raise InvalidRequest(f"{len(problems)} secret(s) named by the definition do not exist", problems)

    # --- registry credentials ----------------------------------------------------------------------------------

    async def set_registry(self, registry: str, body: RegistryCredentialIn) -> tuple[RegistryView, bool]:
        now = self.clock.utcnow()
        fields = {"username": body.username, "password": body.password, "updated_at": now}
        fresh = RegistryCredential(registry=registry, created_at=now, **fields)
        record, revision, created = await _put(self.registries, registry_key(registry), fresh, fields)
        self._keep_login(revision, record)
        return _registry_view(record), created

    async def get_registry(self, registry: str) -> RegistryView:
        try:
            return _registry_view((await self.registries.get(registry_key(registry)))[0])
        except RecordMissing:
            raise RegistryNotFound(f"no credentials for registry {registry!r}") from None

    async def list_registries(self) -> RegistryList:
        return RegistryList(data=[_registry_view(self._logins[r][1]) for r in sorted(self._logins)])

    async def delete_registry(self, registry: str) -> None:
        await self.get_registry(registry)
        await self.registries.delete(registry_key(registry))
        self._logins.pop(registry, None)

    # --- release -----------------------------------------------------------------------------------------------

    async def release(self, assignment: Assignment, secrets: dict[str, str]) -> Assignment:
        """``assignment`` with the values of ``secrets`` (env name -> secret name) and the image registry's login;
        a secret that does not exist (deleted since the deploy) is named in ``secret_error`` instead."""
        login = self._logins.get(registry_of(assignment.image))
        if not secrets and login is None:
            return assignment  # the common case, on the scheduler's hot path: nothing to copy
        released, missing = {}, []
        for env, name in secrets.items():
            value = await self._value(name)
            if value is None:
                missing.append(f"{name!r} (for {env})")
            else:
                released[env] = value
        update: dict[str, object] = {"secret_env": released}
        if missing:
            update["secret_error"] = f"secret {', '.join(missing)} does not exist: set it with `gyoza secrets set`"
        if login is not None:
            held = login[1]
            update["pull_credential"] = PullCredential(
                registry=held.registry, username=held.username, password=held.password
            )
        return assignment.model_copy(update=update)

    async def _value(self, name: str) -> str | None:
        held = self._values.get(name)
        if held is not None:
            return held[1].value
        try:
            record, revision = await self.secrets.get(secret_key(name))
        except RecordMissing:
            return None
        self._keep(name, revision, record)
        return record.value

    async def _exists(self, name: str) -> bool:
        return await self._value(name) is not None

    # --- the cache ---------------------------------------------------------------------------------------------

    async def follow(self, failures: TaskFailures) -> None:
        """Start the watch and return once the cache holds every secret and login."""
        self._task = await start_supervised("secrets-cache", self._watch, failures, self.ready)

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _watch(self) -> None:
        async for change in self.secrets.bucket.watch():
            if change is INITIAL_VALUES_DONE:
                self.ready.set()
            else:
                self._apply(change)

    def _keep(self, name: str, revision: int, record: SecretRecord) -> None:
        """Keep the newer of what is held and what came (this process's own write may be ahead of the watch)."""
        held = self._values.get(name)
        if held is None or held[0] <= revision:
            self._values[name] = (revision, record)

    def _keep_login(self, revision: int, record: RegistryCredential) -> None:
        held = self._logins.get(record.registry)
        if held is None or held[0] <= revision:
            self._logins[record.registry] = (revision, record)

    def _apply(self, change: KeyChange) -> None:
        try:
            if change.key.startswith(SECRET_PREFIX):
                name = change.key[len(SECRET_PREFIX) :]
                if change.value is None:
                    self._values.pop(name, None)
                else:
                    self._keep(name, change.revision, SecretRecord.model_validate_json(change.value))
            elif change.value is None:
                self._logins = {r: held for r, held in self._logins.items() if registry_key(r) != change.key}
            else:
                self._keep_login(change.revision, RegistryCredential.model_validate_json(change.value))
        except (ValidationError, GyozaError) as exc:  # unreadable here (e.g. a newer schema): left out
            log.warning("secrets cache skips %s: %s", change.key, exc)


async def _put(store: RecordStore[R], key: str, fresh: R, changes: dict[str, object]) -> tuple[R, int, bool]:
    """Create ``fresh`` at ``key``, or apply ``changes`` to the record there: (record, revision, created)."""
    try:
        return fresh, await store.create(key, fresh), True
    except RecordExists:
        record, revision, _ = await store.mutate(key, lambda held: held.model_copy(update=changes))
        return record, revision, False


def _secret_view(record: SecretRecord) -> SecretView:
    return SecretView(name=record.name, created_at=record.created_at, updated_at=record.updated_at)


def _registry_view(record: RegistryCredential) -> RegistryView:
    return RegistryView(
        registry=record.registry, username=record.username, created_at=record.created_at,
        updated_at=record.updated_at,
    )  # fmt: skip
