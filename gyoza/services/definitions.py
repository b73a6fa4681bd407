"""Op definitions: versioned, immutable per (name, version), the latest being the most recently deployed.

KV layout (``gyoza_definitions``): ``<name>`` holds a DefinitionPointer listing the deployed versions (latest
last); ``<name>.<escaped version>`` holds each OpDefinition. The pointer is written after the version, so a crash
in between leaves a version that an identical re-post repairs; a version key no pointer lists is an orphan of an
interrupted delete and is overwritten by the next deploy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from gyoza.bus.port import Bus
from gyoza.bus.records import RecordExists, RecordMissing, RecordStore
from gyoza.core.specs import spec_problems
from gyoza.errors import DefinitionNotFound, InvalidRequest, VersionConflict
from gyoza.schema import DefinitionPointer, DefinitionVersionRef, OpDefinition, OpDefinitionIn
from gyoza.services.clock import utcnow
from gyoza.services.observer import NoObserver, WriteObserver

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def version_key(name: str, version: str) -> str:
    """``name.version`` with every character a KV key token cannot hold written as ``=XX`` (``1.2`` -> ``1=2E2``)."""
    escaped = _UNSAFE_KEY_CHARS.sub(lambda m: f"={ord(m.group()):02X}", version)
    return f"{name}.{escaped}"


class DefinitionService:
    def __init__(self, bus: Bus, observer: WriteObserver | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        self.versions_store = RecordStore(bus.definitions, OpDefinition)
        self.pointers = RecordStore(bus.definitions, DefinitionPointer)
        self.observer = observer or NoObserver()
        self.clock = clock
        # Versions are immutable, so a (name, version, revision) never changes content: cache it forever.
        self._cache: dict[tuple[str, str, int], OpDefinition] = {}

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
        pointer = await self._record_version(definition, revision)
        self.observer.definition_written(definition, pointer)
        return definition, created

    async def _pointer_or_none(self, name: str) -> DefinitionPointer | None:
        try:
            return (await self.pointers.get(name))[0]
        except RecordMissing:
            return None

    async def _record_version(self, definition: OpDefinition, revision: int) -> DefinitionPointer:
        ref = DefinitionVersionRef(version=definition.version, created_at=definition.created_at, revision=revision)

        def add(pointer: DefinitionPointer) -> DefinitionPointer | None:
            if any(r.version == ref.version and r.revision == ref.revision for r in pointer.versions):
                return None
            pointer.versions = [r for r in pointer.versions if r.version != ref.version] + [ref]
            return pointer

        while True:
            try:
                pointer, _, _ = await self.pointers.mutate(definition.name, add)
                return pointer
            except RecordMissing:
                fresh = DefinitionPointer(name=definition.name, versions=[ref])
                try:
                    await self.pointers.create(definition.name, fresh)
                    return fresh
                except RecordExists:
                    continue

    async def get(self, name: str, version: str | None = None) -> OpDefinition:
        """The latest version of ``name``, or the given version; DefinitionNotFound otherwise."""
        pointer = await self._pointer_or_none(name)
        if pointer is None or pointer.latest is None:
            raise DefinitionNotFound(f"no definition named {name!r}")
        ref = pointer.latest if version is None else next((r for r in pointer.versions if r.version == version), None)
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
        for ref in pointer.versions:
            await self.versions_store.delete(version_key(name, ref.version))
        self._cache = {k: v for k, v in self._cache.items() if k[0] != name}
        self.observer.definition_deleted(name)
