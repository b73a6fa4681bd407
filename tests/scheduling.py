"""Stand-in for the scheduler in API tests: assign a PENDING run to a worker through the real CAS path.

The scheduler places runs by calling ``statemachine.assign`` inside ``RunService.change``; this helper does the same
from the test process, so worker-event tests can drive a run through ASSIGNED -> RUNNING -> ... over HTTP.
"""

from __future__ import annotations

from gyoza.bus.connection import open_bus
from gyoza.core import statemachine
from gyoza.services.clock import utcnow
from gyoza.services.definitions import DefinitionService
from gyoza.services.runs import RunService
from gyoza.settings import Settings


async def assign_run(nats_url: str, run_id: str, worker_id: str = "w1") -> None:
    """Move the run's current attempt from PENDING to ASSIGNED on ``worker_id`` (no GPUs)."""
    bus = await open_bus(Settings.load(nats_url=nats_url, api_key="x"))
    try:
        runs = RunService(bus, DefinitionService(bus))
        await runs.change(run_id, lambda r: statemachine.assign(r, r.current.number, worker_id, [], utcnow()))
    finally:
        await bus.close()
