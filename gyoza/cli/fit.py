"""Would any current worker ever fit a run's constraints? A warning for ``gyoza deploy`` and ``gyoza run``.

Only a hint: the fleet changes (a bigger worker may join later), so the definition or run is still accepted. The
rules are the scheduler's own (``gyoza.core.placement``), applied to the totals of the ONLINE workers in GET /workers.
"""

from __future__ import annotations

from collections.abc import Iterable

import typer

from gyoza.client import GyozaClient
from gyoza.core.placement import Capacity, Demand, could_ever_fit, pending_reason
from gyoza.errors import GyozaError
from gyoza.schema import Constraints, WorkerStatus, WorkerView


def _capacity(worker: WorkerView) -> Capacity:
    return Capacity(
        worker_id=worker.id, cpu_total=worker.totals.cpu, ram_total=worker.totals.ram_mb,
        gpu_total={gpu.index: gpu.vram_mb for gpu in worker.gpus}, tags=frozenset(worker.tags),
    )  # fmt: skip


def unplaceable(constraints: Constraints, tags: Iterable[str], workers: list[WorkerView]) -> str | None:
    """Why no current worker could ever run this (None when one could, even if it is busy now)."""
    if not workers:
        return "no workers are registered"
    online = [_capacity(w) for w in workers if w.status == WorkerStatus.ONLINE]
    if not online:
        return f"no worker is online ({len(workers)} registered, none ONLINE)"
    demand = Demand.of(constraints, tags)
    if any(demand.tags <= w.tags and could_ever_fit(demand, w) for w in online):
        return None
    reason = pending_reason(demand, online)
    return f"{reason.code.value}: {reason.message}"


def warn_if_unplaceable(client: GyozaClient, constraints: Constraints, tags: Iterable[str], what: str) -> None:
    """Print on stderr why ``what`` cannot be placed on today's fleet; silent when it can or the fleet is unknown."""
    try:
        workers = client.list_workers()
    except GyozaError:
        return  # a hint only: the command already did what was asked
    problem = unplaceable(constraints, tags, workers)
    if problem is not None:
        typer.secho(
            f"warning: no current worker could ever fit {what}: {problem}; runs wait (PENDING) until a worker that "
            "fits joins", fg="yellow", err=True,
        )  # fmt: skip
