"""What the services tell the process they run in about their own writes (read-your-writes for local indexes)."""

from __future__ import annotations

from typing import Protocol

from gyoza.schema import DefinitionPointer, OpDefinition, RunRecord


class WriteObserver(Protocol):
    def run_written(self, record: RunRecord, revision: int) -> None: ...

    def run_deleted(self, run_id: str, revision: int) -> None:
        """The run, last at ``revision``, is gone: older versions still arriving must not bring it back."""
        ...

    def definition_written(self, definition: OpDefinition, pointer: DefinitionPointer) -> None: ...

    def definition_deleted(self, name: str) -> None: ...


class NoObserver:
    """For processes without a local index (tests of the services alone, the scheduler)."""

    def run_written(self, record: RunRecord, revision: int) -> None:
        pass

    def run_deleted(self, run_id: str, revision: int) -> None:
        pass

    def definition_written(self, definition: OpDefinition, pointer: DefinitionPointer) -> None:
        pass

    def definition_deleted(self, name: str) -> None:
        pass
