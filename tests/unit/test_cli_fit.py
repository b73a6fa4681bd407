"""The deploy/run warning: could any worker of today's fleet ever fit these constraints (by its totals, not what is
free now)? The scheduler's placement rules applied to GET /workers views."""

from datetime import UTC, datetime

from gyoza.cli.fit import unplaceable
from gyoza.schema import Constraints, GpuView, ResourceAmounts, WorkerStatus, WorkerView

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def view(
    status: WorkerStatus = WorkerStatus.ONLINE, cpu: float = 4, ram_mb: int = 8000, vram: tuple[int, ...] = (),
    tags: tuple[str, ...] = (), busy: bool = False,
) -> WorkerView:  # fmt: skip
    totals = ResourceAmounts(cpu=cpu, ram_mb=ram_mb, vram_mb=sum(vram))
    # A busy worker has nothing free right now: it still counts, since it could run the op once it is done.
    free = ResourceAmounts(cpu=0, ram_mb=0, vram_mb=0) if busy else totals
    gpus = [
        GpuView(index=i, uuid=f"GPU-{i}", name="g", vram_mb=v, reserved_vram_mb=v if busy else 0,
                free_vram_mb=0 if busy else v)
        for i, v in enumerate(vram)
    ]  # fmt: skip
    return WorkerView(
        id=f"w-{cpu}-{ram_mb}", status=status, tags=list(tags), version="", totals=totals, reserved=totals, free=free,
        gpus=gpus, running=[], registered_at=NOW, last_heartbeat=NOW,
    )  # fmt: skip


def test_no_workers_at_all_or_none_online() -> None:
    assert unplaceable(Constraints(), [], []) == "no workers are registered"
    offline = [view(WorkerStatus.OFFLINE), view(WorkerStatus.DRAINING)]
    assert unplaceable(Constraints(), [], offline) == "no worker is online (2 registered, none ONLINE)"


def test_a_worker_that_fits_by_its_totals_is_enough_even_when_busy() -> None:
    assert unplaceable(Constraints(cpu=4, ram_mb=8000), [], [view(busy=True)]) is None
    gpu_job = Constraints(vram_mb=20000, gpus=2)
    assert unplaceable(gpu_job, ["a100"], [view(vram=(40000, 24000), tags=("a100", "eu"), busy=True)]) is None


def test_too_large_or_missing_tags_name_what_is_short() -> None:
    too_big = unplaceable(Constraints(cpu=64), [], [view(cpu=4), view(WorkerStatus.OFFLINE, cpu=128)])
    assert too_big is not None and too_big.startswith("NO_WORKER_LARGE_ENOUGH: needs cpu 64")
    assert "the largest worker has cpu 4" in too_big, "only ONLINE workers count"
    vram = unplaceable(Constraints(vram_mb=30000), [], [view(vram=(24000, 24000))])
    assert vram is not None and vram.startswith("NO_WORKER_LARGE_ENOUGH") and "GPU VRAM 24000 MB" in vram
    tags = unplaceable(Constraints(), ["h100"], [view(tags=("a100",))])
    assert tags == "NO_WORKER_WITH_TAGS: no online worker has all tags: h100"
    # The tagged worker is too small and the large one lacks the tag: nobody can run it.
    split = unplaceable(Constraints(cpu=16), ["a100"], [view(cpu=4, tags=("a100",)), view(cpu=64)])
    assert split is not None and split.startswith("NO_WORKER_LARGE_ENOUGH")
