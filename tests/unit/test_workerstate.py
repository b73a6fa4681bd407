"""Worker status transitions, pure: one status field, decided in one module."""

from __future__ import annotations

import pytest

from gyoza.core import workerstate
from gyoza.schema import WorkerStatus

ONLINE, DRAINING, OFFLINE = WorkerStatus.ONLINE, WorkerStatus.DRAINING, WorkerStatus.OFFLINE


@pytest.mark.parametrize(
    ("transition", "before", "after"),
    [
        (workerstate.heard, ONLINE, ONLINE),
        (workerstate.heard, DRAINING, DRAINING),  # heartbeats do not undo a drain
        (workerstate.heard, OFFLINE, ONLINE),  # back after an eviction: registered afresh
        (workerstate.drained, ONLINE, DRAINING),
        (workerstate.drained, DRAINING, DRAINING),
        (workerstate.drained, OFFLINE, OFFLINE),  # gets no work anyway
        (workerstate.evicted, ONLINE, OFFLINE),
        (workerstate.evicted, DRAINING, OFFLINE),
    ],
)
def test_transitions(transition: object, before: WorkerStatus, after: WorkerStatus) -> None:
    assert transition(before) == after  # type: ignore[operator]


def test_only_an_online_worker_gets_new_runs() -> None:
    assert [s for s in WorkerStatus if workerstate.schedulable(s)] == [ONLINE]
