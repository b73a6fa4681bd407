"""Placement rules (SPEC §5.1-5.3): does a run fit a worker, on which GPUs, and if nowhere, why not.

Pure: the scheduler's ledger hands in plain numbers. VRAM is reserved per device: a run needing ``gpus`` devices with
``vram_mb`` each gets the devices with the least free VRAM that still fit (best fit keeps large devices whole).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gyoza.schema import Concurrency, Constraints, Quota, ReasonCode, StateReason

# A concurrency group a run belongs to and the most runs of it that may hold a place at once: ("definition:<name>",
# its max_concurrent) or ("key:<concurrency key>", the run's limit).
Limit = tuple[str, int]
# The (definition, version) whose warm instances can serve a run.
WarmKey = tuple[str, str]


@dataclass(frozen=True)
class Demand:
    """What a run needs; equal demands form one queue lane (the scheduler's index). Runs under different
    concurrency limits wait in different lanes, so a group at its limit never holds up runs outside it."""

    cpu: float
    ram_mb: int
    vram_mb: int
    gpus: int
    tags: frozenset[str]
    limits: tuple[Limit, ...] = ()
    image: str = ""  # preferred where it is pulled already; never required
    owner: str = ""  # the key whose quota it counts against ("": none)
    warm: WarmKey | None = None  # served by warm instances of this definition version: preferred where one is idle

    @classmethod
    def of(
        cls, constraints: Constraints, tags: Iterable[str], limits: tuple[Limit, ...] = (), image: str = "",
        owner: str = "", warm: WarmKey | None = None,
    ) -> Demand:  # fmt: skip
        gpus = constraints.gpus or 0
        return cls(
            constraints.cpu, constraints.ram_mb, constraints.vram_mb, gpus, frozenset(tags), limits, image, owner, warm
        )

    def amounts(self) -> tuple[float, float, float, float]:
        """What it takes of a quota: (GPUs, VRAM over its GPUs, CPU, RAM)."""
        return (self.gpus, self.vram_mb * self.gpus, self.cpu, self.ram_mb)

    def describe(self) -> str:
        parts = [f"cpu {self.cpu:g}", f"ram {self.ram_mb} MB"]
        if self.gpus:
            parts.append(f"{self.gpus} GPU(s) with {self.vram_mb} MB VRAM free each")
        return ", ".join(parts)


@dataclass
class Capacity:
    """A worker's totals and what is free right now (totals minus reservations)."""

    worker_id: str
    cpu_total: float
    ram_total: int
    gpu_total: dict[int, int]
    tags: frozenset[str]
    schedulable: bool = True
    cpu_free: float = 0.0
    ram_free: int = 0
    gpu_free: dict[int, int] = field(default_factory=dict)
    images: frozenset[str] = frozenset()  # pulled already: preferred for runs of one of them
    # Its warm instances, busy or idle, as its last heartbeat listed them: the GPUs each holds, by definition version.
    warm: dict[WarmKey, list[tuple[int, ...]]] = field(default_factory=dict)
    # How many of them the attempts held here keep busy, by (definition version, GPUs): the rest are idle.
    warm_busy: dict[tuple[WarmKey, tuple[int, ...]], int] = field(default_factory=dict)


def run_limits(
    definition: str | None, max_concurrent: int | None, concurrency: Concurrency | None,
    max_instances: int | None = None,
) -> tuple[Limit, ...]:  # fmt: skip
    """The concurrency groups of a run: its definition's ``max_concurrent`` and ``max_instances`` (every version
    counts), its key's."""
    limits: list[Limit] = []
    if definition is not None and max_concurrent is not None:
        limits.append((f"definition:{definition}", max_concurrent))
    if definition is not None and max_instances is not None:
        limits.append((f"instances:{definition}", max_instances))
    if concurrency is not None:
        limits.append((f"key:{concurrency.key}", concurrency.limit))
    return tuple(limits)


def limit_reason(group: str, limit: int, active: int) -> StateReason:
    """Why a run under a full concurrency limit waits, with the numbers: "definition embedder: 4/4 running"."""
    kind, _, name = group.partition(":")
    what = {"definition": f"definition {name} (max_concurrent)", "instances": f"definition {name} (max_instances)"}.get(
        kind, f"concurrency key {name}"
    )
    return StateReason(code=ReasonCode.CONCURRENCY_LIMIT, message=f"{what}: {active}/{limit} assigned or running")


QUOTA_FIELDS = ("gpus", "vram_mb", "cpu", "ram_mb")
_QUOTA_UNITS = ("GPUs", "MB VRAM", "CPU", "MB RAM")


def quota_shortfall(demand: Demand, held: tuple[float, ...], quota: Quota) -> str | None:
    """How a run would overrun its key's quota, with the numbers ("6/6 GPUs"), or None when it fits."""
    for name, unit, used, wanted in zip(QUOTA_FIELDS, _QUOTA_UNITS, held, demand.amounts(), strict=True):
        limit = getattr(quota, name)
        if limit is not None and wanted > 0 and used + wanted > limit + 1e-9:
            return f"{used:g}/{limit:g} {unit} in use"
    return None


def quota_reason(owner_name: str, shortfall: str) -> StateReason:
    return StateReason(code=ReasonCode.QUOTA_EXCEEDED, message=f"quota of key {owner_name}: {shortfall}")


def choose_gpus(demand: Demand, gpu_free: dict[int, int]) -> list[int] | None:
    """The ``demand.gpus`` devices with the least free VRAM that still hold ``vram_mb``; None if too few fit."""
    if demand.gpus == 0:
        return []
    fitting = sorted((free, index) for index, free in gpu_free.items() if free >= demand.vram_mb)
    if len(fitting) < demand.gpus:
        return None
    return sorted(index for _, index in fitting[: demand.gpus])


def fit(demand: Demand, worker: Capacity) -> list[int] | None:
    """GPU ids to use when ``demand`` fits ``worker`` now, else None."""
    if not worker.schedulable or not demand.tags <= worker.tags:
        return None
    if demand.cpu > worker.cpu_free + 1e-9 or demand.ram_mb > worker.ram_free:
        return None
    return choose_gpus(demand, worker.gpu_free)


def leftover_score(demand: Demand, worker: Capacity) -> float:
    """How much of the worker stays free after placing ``demand`` (lower = tighter packing, preferred)."""
    cpu_left = (worker.cpu_free - demand.cpu) / worker.cpu_total if worker.cpu_total else 0.0
    ram_left = (worker.ram_free - demand.ram_mb) / worker.ram_total if worker.ram_total else 0.0
    return cpu_left + ram_left


def idle_instance(demand: Demand, worker: Capacity) -> list[int] | None:
    """The GPUs of an idle warm instance that can serve ``demand`` on ``worker`` now, if there is one (its GPUs
    still have the VRAM: an idle instance's hold is not reserved, so other runs may have taken it)."""
    if demand.warm is None:
        return None
    for gpus in dict.fromkeys(worker.warm.get(demand.warm, ())):
        idle = worker.warm[demand.warm].count(gpus) - worker.warm_busy.get((demand.warm, gpus), 0)
        if idle > 0 and len(gpus) == demand.gpus and all(worker.gpu_free.get(i, -1) >= demand.vram_mb for i in gpus):
            return list(gpus)
    return None


def best_worker(demand: Demand, workers: Iterable[Capacity]) -> tuple[Capacity, list[int]] | None:
    """The fitting worker with an idle warm instance for the run, then with the run's image already, then that the
    run packs most tightly (ties by id, so placement is deterministic)."""
    best: tuple[tuple[bool, bool, float, str], Capacity, list[int]] | None = None
    for worker in workers:
        gpu_ids = fit(demand, worker)
        if gpu_ids is None:
            continue
        warm_gpus = idle_instance(demand, worker)
        gpu_ids = gpu_ids if warm_gpus is None else warm_gpus
        key = (warm_gpus is None, demand.image not in worker.images, leftover_score(demand, worker), worker.worker_id)
        if best is None or key < best[0]:
            best = (key, worker, gpu_ids)
    return (best[1], best[2]) if best else None


def could_ever_fit(demand: Demand, worker: Capacity) -> bool:
    """Would ``demand`` fit this worker if nothing else were running on it?"""
    if demand.cpu > worker.cpu_total + 1e-9 or demand.ram_mb > worker.ram_total:
        return False
    return choose_gpus(demand, worker.gpu_total) is not None


def pending_reason(demand: Demand, workers: list[Capacity]) -> StateReason:
    """An honest reason why ``demand`` is not placed: who is missing, or what is short and the most free seen."""
    online = [w for w in workers if w.schedulable]
    if not online:
        return StateReason(code=ReasonCode.NO_WORKERS, message="no worker is online")
    tagged = [w for w in online if demand.tags <= w.tags]
    if not tagged:
        wanted = ", ".join(sorted(demand.tags))
        return StateReason(code=ReasonCode.NO_WORKER_WITH_TAGS, message=f"no online worker has all tags: {wanted}")
    if not any(could_ever_fit(demand, w) for w in tagged):
        return StateReason(
            code=ReasonCode.NO_WORKER_LARGE_ENOUGH,
            message=f"needs {demand.describe()}; the largest worker has {_most(tagged, free=False)}",
        )
    return StateReason(
        code=ReasonCode.INSUFFICIENT_RESOURCES,
        message=f"waiting for {demand.describe()}; the most free on any worker now: {_most(tagged, free=True)}",
    )


def _most(workers: list[Capacity], free: bool) -> str:
    """The largest CPU, RAM and per-GPU VRAM among ``workers``, each taken on its own (free now, or in total)."""
    cpu = max(w.cpu_free if free else w.cpu_total for w in workers)
    ram = max(w.ram_free if free else w.ram_total for w in workers)
    vram = max((v for w in workers for v in (w.gpu_free if free else w.gpu_total).values()), default=0)
    return f"cpu {cpu:g}, ram {ram} MB, GPU VRAM {vram} MB"
