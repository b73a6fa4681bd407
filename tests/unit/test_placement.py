"""Placement rules: fit, best-fit GPUs, the tightest worker, and the reason a run waits."""

from gyoza.core.placement import Capacity, Demand, best_worker, choose_gpus, pending_reason
from gyoza.schema import ReasonCode


def worker(name: str, cpu: float, ram: int, gpus: dict[int, int] | None = None, tags: str = "") -> Capacity:
    gpus = gpus or {}
    return Capacity(name, cpu, ram, dict(gpus), frozenset(t for t in tags.split(",") if t), True, cpu, ram, dict(gpus))


def demand(cpu: float = 0, ram: int = 0, vram: int = 0, gpus: int = 0, tags: str = "") -> Demand:
    return Demand(cpu, ram, vram, gpus, frozenset(t for t in tags.split(",") if t))


def test_best_fit_picks_the_fullest_gpu_that_still_fits() -> None:
    assert choose_gpus(demand(vram=4000, gpus=1), {0: 24000, 1: 8000, 2: 3000}) == [1]
    assert choose_gpus(demand(vram=30000, gpus=2), {0: 40000, 1: 40000}) == [0, 1]
    assert choose_gpus(demand(vram=30000, gpus=2), {0: 40000, 1: 20000}) is None


def test_the_worker_left_tightest_wins_and_tags_must_all_be_present() -> None:
    big, small = worker("big", 32, 128000, tags="a100"), worker("small", 4, 16000, tags="a100,eu")
    placed = best_worker(demand(cpu=2, ram=8000, tags="a100"), [big, small])
    assert placed is not None and placed[0].worker_id == "small"
    assert best_worker(demand(tags="h100"), [big, small]) is None


def test_a_worker_with_the_image_pulled_wins_over_a_tighter_fit_but_is_never_required() -> None:
    big, small = worker("big", 32, 128000), worker("small", 4, 16000)
    big.images = frozenset({"ghcr.io/acme/embedder:2"})
    wanted = Demand(2, 8000, 0, 0, frozenset(), image="ghcr.io/acme/embedder:2")
    placed = best_worker(wanted, [small, big])
    assert placed is not None and placed[0].worker_id == "big"
    other = best_worker(Demand(2, 8000, 0, 0, frozenset(), image="ghcr.io/acme/other:1"), [small, big])
    assert other is not None and other[0].worker_id == "small"  # nobody has it: the tightest fit, as always
    big.cpu_free = 1  # the worker with the image is full: another one pulls it
    fallback = best_worker(wanted, [small, big])
    assert fallback is not None and fallback[0].worker_id == "small"


def test_reasons_name_what_is_missing() -> None:
    assert pending_reason(demand(), []).code == ReasonCode.NO_WORKERS
    assert pending_reason(demand(tags="h100"), [worker("w", 4, 1000)]).code == ReasonCode.NO_WORKER_WITH_TAGS
    too_big = pending_reason(demand(ram=64000), [worker("w", 8, 32000)])
    assert too_big.code == ReasonCode.NO_WORKER_LARGE_ENOUGH
    assert "ram 32000 MB" in too_big.message
    busy = worker("w", 8, 32000, {0: 40000})
    busy.ram_free, busy.gpu_free = 1000, {0: 5000}
    short = pending_reason(demand(ram=4000, vram=10000, gpus=1), [busy])
    assert short.code == ReasonCode.INSUFFICIENT_RESOURCES
    assert "ram 1000 MB, GPU VRAM 5000 MB" in short.message
