"""Worker status, pure: the one place its transitions are decided (as ``statemachine`` is for runs).

    ONLINE --drain--> DRAINING          (no new assignments; what runs there finishes)
    ONLINE | DRAINING --evict--> OFFLINE
    OFFLINE --heartbeat--> ONLINE       (a worker that went away registers afresh; a drain ends with it)

A drain of an OFFLINE worker changes nothing: it gets no work anyway. Only an ONLINE worker is given new runs.
"""

from __future__ import annotations

from gyoza.schema import WorkerStatus


def heard(status: WorkerStatus) -> WorkerStatus:
    """A heartbeat arrived: an offline worker is back; a draining one stays draining."""
    return WorkerStatus.ONLINE if status == WorkerStatus.OFFLINE else status


def drained(status: WorkerStatus) -> WorkerStatus:
    return WorkerStatus.DRAINING if status == WorkerStatus.ONLINE else status


def evicted(status: WorkerStatus) -> WorkerStatus:
    return WorkerStatus.OFFLINE


def schedulable(status: WorkerStatus) -> bool:
    return status == WorkerStatus.ONLINE
