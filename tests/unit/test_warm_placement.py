"""Placement with warm instances (issue 13.1): a run of a definition that keeps instances warm goes to a worker with
an idle instance of its version (on that instance's GPUs), before one with the image, before the tightest fit; an
instance the attempts held there keep busy is not idle; and warmth is only a preference, never a requirement."""

from __future__ import annotations

import uuid

from gyoza.core.placement import Capacity, Demand, best_worker
from gyoza.scheduler.ledger import Held, Ledger
from gyoza.schema import OpDefinitionIn, RunFromDefinitionIn, RunState
from tests.unit.test_concurrency_limits import placed
from tests.unit.twin import twin

KEY = ("embedder", "2")


def gpu_worker(name: str, free: dict[int, int], warm: list[tuple[int, ...]] | None = None) -> Capacity:
    worker = Capacity(name, 32, 128000, dict(free), frozenset(), True, 32, 128000, dict(free))
    worker.warm = {KEY: warm} if warm else {}
    return worker


def test_an_idle_instance_wins_on_its_own_gpus_and_a_busy_one_does_not() -> None:
    wanted = Demand(1, 1000, 8000, 1, frozenset(), warm=KEY)
    tight = gpu_worker("tight", {0: 9000})
    warm = gpu_worker("warm", {0: 24000, 1: 24000, 2: 10000}, warm=[(1,)])
    placed_on = best_worker(wanted, [tight, warm])
    assert placed_on is not None and (placed_on[0].worker_id, placed_on[1]) == ("warm", [1])  # not best-fit GPU 2

    warm.warm_busy = {(KEY, (1,)): 1}  # an attempt held there runs in it
    assert best_worker(wanted, [tight, warm]) == (tight, [0])
    warm.warm_busy = {}
    warm.gpu_free[1] = 4000  # another run took the idle instance's VRAM: it cannot serve this one
    assert best_worker(wanted, [tight, warm]) == (tight, [0])
    cold = Demand(1, 1000, 8000, 1, frozenset())  # a run of another definition knows nothing of warmth
    assert best_worker(cold, [tight, warm]) == (tight, [0])


def test_the_ledger_counts_the_instances_its_attempts_keep_busy() -> None:
    ledger = Ledger()
    ledger.workers["w"] = gpu_worker("w", {0: 24000}, warm=[(0,), (0,)])
    demand = Demand(1, 1000, 8000, 1, frozenset(), warm=KEY)
    for n in range(2):
        ledger.reserve(Held(f"run-{n}", 1, "w", demand, [0], RunState.ASSIGNED))
    assert ledger.workers["w"].warm_busy == {(KEY, (0,)): 2}
    ledger.release("run-0")
    assert ledger.workers["w"].warm_busy == {(KEY, (0,)): 1}


async def test_the_scheduler_sends_a_warm_definitions_run_to_the_worker_with_an_idle_instance() -> None:
    async with twin() as t:
        name = "warm-" + uuid.uuid4().hex[:6]
        await t.runs.definitions.deploy(OpDefinitionIn.model_validate(
            {"name": name, "version": "1", "image": "busybox", "constraints": {"cpu": 1}, "keep_warm_seconds": 60}
        ))  # fmt: skip
        await t.heartbeat("a-tight", cpu=2)
        await t.heartbeat("b-warm", cpu=16, warm=[{"id": "i1", "definition": name, "version": "1"}])
        body = RunFromDefinitionIn.model_validate({})
        first, _ = await t.runs.create_from_definition(name, body, None)
        await placed(t, 1)
        assert (await t.runs.get(first.id)).current.worker_id == "b-warm"
        second, _ = await t.runs.create_from_definition(name, body, None)  # the instance is busy with the first
        await placed(t, 2)
        assert (await t.runs.get(second.id)).current.worker_id == "a-tight"
