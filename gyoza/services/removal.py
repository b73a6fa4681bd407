"""Deleting finished runs: DELETE /runs/{id} and POST /runs/purge.

A run goes with everything stored for it: each attempt's captured log (object store), its live log lines (the logs
stream), its webhook delivery log, the idempotency entry that points at it (so that the key, sent again, creates a new
run rather than finding a missing one), and last the record itself, by compare-and-set on the revision that was checked
to be finished. That order is the crash-safe one: a process dying half-way leaves the run in place, finished, and a
repeated delete finishes the work; the record going first would leave logs no request could find again. Only finished
runs are deleted: an active one is cancelled first, so no worker is left reporting on a run that no longer exists.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from gyoza.bus import names
from gyoza.bus.port import Bus
from gyoza.bus.records import RecordMissing
from gyoza.errors import Conflict, InvalidTransition, RunNotFound, Unavailable
from gyoza.schema import TERMINAL_STATES, RunRecord
from gyoza.services import webhooks
from gyoza.services.runs import RunService, idempotency_digest

# A run changing between the check and the delete (a retry, say) is checked again, this many times.
MAX_DELETE_ATTEMPTS = 5
# Runs a purge deletes at once.
PURGE_PARALLELISM = 32


class RunRemoval:
    def __init__(self, runs: RunService) -> None:
        self.runs = runs
        self.bus = runs.bus

    async def delete(self, run_id: str) -> None:
        """Delete a finished run and what is stored for it; ``RunNotFound`` if there is none,
        ``InvalidTransition`` (409) while it is not finished."""
        for _ in range(MAX_DELETE_ATTEMPTS):
            try:
                record, revision = await self.runs.store.get(run_id)
            except RecordMissing:
                raise RunNotFound(f"no run with id {run_id!r}") from None
            _check_finished(record)
            await self._delete_belongings(record)
            try:
                await self.runs.store.delete(run_id, last=revision)
            except Conflict:
                continue  # changed since the check: look again
            self.runs.observer.run_deleted(run_id, revision)
            return
        raise Unavailable(f"run {run_id} is changing too fast to delete")

    async def purge(self, run_ids: Sequence[str]) -> int:
        """Delete every finished run of ``run_ids``; returns how many were deleted (the others are active, or were
        deleted meanwhile)."""
        gate = asyncio.Semaphore(PURGE_PARALLELISM)

        async def one(run_id: str) -> bool:
            async with gate:
                try:
                    await self.delete(run_id)
                except (RunNotFound, InvalidTransition):
                    return False
                return True

        return sum(await asyncio.gather(*(one(run_id) for run_id in run_ids)))

    async def _delete_belongings(self, record: RunRecord) -> None:
        await delete_logs(self.bus, record.id, len(record.attempts))
        if record.idempotency_key is not None:
            await self._release_idempotency_key(record.id, idempotency_digest(record.idempotency_key))

    async def _release_idempotency_key(self, run_id: str, digest: str) -> None:
        try:
            entry, revision = await self.runs.idempotency.get(digest)
        except RecordMissing:
            return  # expired (the bucket keeps entries 24 h), or released by an earlier try
        if entry.run_id == run_id:
            with contextlib.suppress(Conflict):  # rebound meanwhile: the key belongs to another run now
                await self.runs.idempotency.delete(digest, last=revision)


async def delete_logs(bus: Bus, run_id: str, attempts: int) -> None:
    """Delete what is logged of a run: attempts 1 to ``attempts``' captured logs, its live log lines, its webhook
    delivery log (each absent is fine, so a repeat is harmless)."""
    for number in range(1, attempts + 1):
        await bus.delete_object(f"{run_id}/{number}")
    await bus.purge_subject(names.LOGS_STREAM, names.run_log_subjects(run_id))
    await bus.purge_subject(webhooks.LOG_STREAM, webhooks.log_subject(run_id))


def _check_finished(record: RunRecord) -> None:
    state = record.current.state
    if state not in TERMINAL_STATES:
        raise InvalidTransition(
            f"run {record.id} is {state.value}: only a finished run is deleted (cancel it first)",
            details=[{"field": "state", "problem": f"{state.value} is not finished"}],
        )
