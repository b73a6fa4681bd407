"""Op definitions: versioned, immutable per (name, version), the latest being the most recently deployed.

KV layout (``gyoza_definitions``): ``<name>`` holds a DefinitionPointer listing the deployed versions (latest
last); ``<name>.<escaped version>`` holds each OpDefinition. The pointer is written after the version, so a crash
in between leaves a version that an identical re-post repairs; a version key no pointer lists is an orphan of an
interrupted delete and is overwritten by the next deploy.

Reads of pointers come from a cache that a watch of the bucket keeps current (``follow``), so a run creation reads no
KV for its definition. This process's own deploys and deletes apply to the cache before they return (read-your-
writes); a name the cache does not know, or a version its pointer does not list, is read from KV (just deployed by
another process, its watch entry still on the way). What stays is a window of the watch's delivery delay (about a
millisecond) in which another process's new latest version or delete is not seen yet. Until the watch's replay is in,
and whenever it failed, every read goes to KV.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from pydantic import ValidationError

from gyoza.bus import names
from gyoza.bus.port import INITIAL_VALUES_DONE, Bus, KeyChange
from gyoza.bus.records import RecordExists, RecordMissing, RecordStore
from gyoza.core.specs import spec_problems
from gyoza.errors import DefinitionNotFound, GyozaError, InvalidRequest, VersionConflict
from gyoza.schema import DefinitionPointer, DefinitionVersionRef, OpDefinition, OpDefinitionIn
from gyoza.services.clock import utcnow
from gyoza.services.observer import NoObserver, WriteObserver
from gyoza.supervision import TaskFailures, stop_task, supervised

log = logging.getLogger(__name__)


def version_key(name: str, version: str) -> str:
    """``name.version``, the version as one KV key token (``1.2`` -> ``1=2E2``)."""
    return f"{name}.{names.key_token(version)}"


class DefinitionService:
    def __init__(self, bus: Bus, observer: WriteObserver | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        self.versions_store = RecordStore(bus.definitions, OpDefinition)
        self.pointers = RecordStore(bus.definitions, DefinitionPointer)
        self.observer = observer or NoObserver()
        self.clock = clock
        # Versions are immutable, so a (name, version, revision) never changes content: cache it forever.
        self._cache: dict[tuple[str, str, int], OpDefinition] = {}
        # Pointers by name with their KV revision (None: deleted), current while ``_following``.
        self._pointers: dict[str, tuple[DefinitionPointer | None, int]] = {}
        self._following = False
        # Deleted by this process, the watch's delete not in yet: read from KV (an older put may still come first).
        self._deleting: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    # --- the pointer cache -------------------------------------------------------------------------------------

    async def follow(self, failures: TaskFailures) -> None:
        """Start the watch that feeds the pointer cache (supervised: restarted, and replayed, after a failure)."""
        self._task = asyncio.create_task(supervised("definitions-cache", self._watch, failures),
                                         name="definitions-cache")  # fmt: skip

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _watch(self) -> None:
        try:
            async for change in self.pointers.bucket.watch():
                if change is INITIAL_VALUES_DONE:
                    self._following = True
                elif "." not in change.key:  # a pointer; version keys are immutable and cached as they are read
                    self._apply(change)
        finally:
            self._following = False
            self._pointers.clear()
            self._deleting.clear()

    def _apply(self, change: KeyChange) -> None:
        if change.value is None:
            self._deleting.discard(change.key)
            self._remember(change.key, None, change.revision)
            return
        try:
            pointer = DefinitionPointer.model_validate_json(change.value)
        except (ValidationError, GyozaError) as exc:  # unreadable here: this name is read from KV
            log.warning("definitions cache skips %s: %s", change.key, exc)
            self._pointers.pop(change.key, None)
            return
        self._remember(change.key, pointer, change.revision)

    def _remember(self, name: str, pointer: DefinitionPointer | None, revision: int) -> None:
        """Keep the newer of what is cached and what came (this process's own write may be ahead of the watch)."""
        cached = self._pointers.get(name)
        if cached is None or cached[1] < revision:
            self._pointers[name] = (pointer, revision)

    def _forget(self, name: str) -> None:
        # Deleted here: read from KV until the watch delivers the delete (its revision is not known before).
        self._deleting.add(name)
        self._pointers.pop(name, None)

    async def _current_pointer(self, name: str) -> DefinitionPointer | None:
        cached = self._pointers.get(name) if self._following and name not in self._deleting else None
        if cached is not None and cached[0] is not None:
            return cached[0]
        return await self._pointer_or_none(name)

    async def deploy(self, body: OpDefinitionIn) -> tuple[OpDefinition, bool]:
        """Store a version. Returns (definition, created); identical re-posts are (stored, False)."""
        problems = spec_problems(body.input_specs)
        if problems:
            raise InvalidRequest("invalid input_specs", details=problems)
        data = body.model_dump()
        definition = OpDefinition(id=body.name, created_at=self.clock(), **data)
        key = version_key(body.name, body.version)
        pointer = await self._pointer_or_none(body.name)
        listed = pointer is not None and any(ref.version == body.version for ref in pointer.versions)
        try:
            revision = await self.versions_store.create(key, definition)
            created = True
        except RecordExists:
            stored, revision = await self.versions_store.get(key)
            if listed and stored.content() != definition.content():
                raise VersionConflict(
                    f"{body.name} version {body.version} is already deployed with different content; "
                    "deploy a new version instead",
                    details=[{"field": "version", "problem": "already deployed with different content"}],
                ) from None
            if listed or stored.content() == definition.content():
                definition, created = stored, False
            else:
                revision = await self.versions_store.write(key, definition, revision)
                created = True
        pointer, pointer_revision = await self._record_version(definition, revision)
        self._remember(definition.name, pointer, pointer_revision)
        self._cache[(definition.name, definition.version, revision)] = definition
        self.observer.definition_written(definition, pointer)
        return definition, created

    async def _pointer_or_none(self, name: str) -> DefinitionPointer | None:
        try:
            return (await self.pointers.get(name))[0]
        except RecordMissing:
            return None

    async def _record_version(self, definition: OpDefinition, revision: int) -> tuple[DefinitionPointer, int]:
        ref = DefinitionVersionRef(version=definition.version, created_at=definition.created_at, revision=revision)

        def add(pointer: DefinitionPointer) -> DefinitionPointer | None:
            if any(r.version == ref.version and r.revision == ref.revision for r in pointer.versions):
                return None
            pointer.versions = [r for r in pointer.versions if r.version != ref.version] + [ref]
            return pointer

        while True:
            try:
                pointer, pointer_revision, _ = await self.pointers.mutate(definition.name, add)
                return pointer, pointer_revision
            except RecordMissing:
                fresh = DefinitionPointer(name=definition.name, versions=[ref])
                try:
                    return fresh, await self.pointers.create(definition.name, fresh)
                except RecordExists:
                    continue

    async def get(self, name: str, version: str | None = None) -> OpDefinition:
        """The latest version of ``name``, or the given version; DefinitionNotFound otherwise."""
        pointer = await self._current_pointer(name)
        ref = _ref(pointer, version)
        if ref is None and self._following:
            pointer = await self._pointer_or_none(name)  # deployed elsewhere a moment ago: the watch lags
            ref = _ref(pointer, version)
        if pointer is None or pointer.latest is None:
            raise DefinitionNotFound(f"no definition named {name!r}")
        if ref is None:
            raise DefinitionNotFound(f"definition {name!r} has no version {version!r}")
        return await self._load(name, ref)

    async def _load(self, name: str, ref: DefinitionVersionRef) -> OpDefinition:
        cache_key = (name, ref.version, ref.revision)
        cached = self._cache.get(cache_key)
        if cached is None:
            try:
                cached, _ = await self.versions_store.get(version_key(name, ref.version))
            except RecordMissing:
                raise DefinitionNotFound(f"definition {name!r} version {ref.version!r} was deleted") from None
            self._cache[cache_key] = cached
        return cached

    async def versions(self, name: str) -> list[OpDefinition]:
        """Every deployed version, newest first."""
        pointer = await self._pointer_or_none(name)
        if pointer is None or not pointer.versions:
            raise DefinitionNotFound(f"no definition named {name!r}")
        return [await self._load(name, ref) for ref in reversed(pointer.versions)]

    async def delete(self, name: str) -> None:
        """Remove the name (new runs of it get 404) and then its versions; existing runs keep their copy."""
        pointer = await self._pointer_or_none(name)
        if pointer is None:
            raise DefinitionNotFound(f"no definition named {name!r}")
        await self.pointers.delete(name)
        self._forget(name)
        for ref in pointer.versions:
            await self.versions_store.delete(version_key(name, ref.version))
        self._cache = {k: v for k, v in self._cache.items() if k[0] != name}
        self.observer.definition_deleted(name)


def _ref(pointer: DefinitionPointer | None, version: str | None) -> DefinitionVersionRef | None:
    if pointer is None:
        return None
    return pointer.latest if version is None else next((r for r in pointer.versions if r.version == version), None)
