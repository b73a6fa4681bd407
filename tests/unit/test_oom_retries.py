"""Out of memory (issue 13.3): a CUDA out-of-memory error is ``GPU_OOM``, not a plain exit code, and a retry policy
with ``grow_on_oom`` asks the next attempt for more of the memory that ran out, up to the largest request allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gyoza.core import statemachine as sm
from gyoza.schema import Constraints, FailureReason, RetryPolicy, RunState
from gyoza.worker.iocontract import AttemptDir, ExitStatus
from tests.unit.test_statemachine import NOW, event, running


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", FailureReason.GPU_OOM),
        ("jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying", FailureReason.GPU_OOM),
        ("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)", FailureReason.GPU_OOM),
        ("java.lang.OutOfMemoryError: Java heap space", FailureReason.EXIT_CODE),  # host memory: not the GPU's
        ("ValueError: bad input", FailureReason.EXIT_CODE),
    ],
)
def test_a_cuda_out_of_memory_is_gpu_oom(tmp_path: Path, stderr: str, reason: FailureReason) -> None:
    directory = AttemptDir(tmp_path, "r1", 1)
    directory.prepare({})
    outcome = directory.outcome(ExitStatus(exit_code=1), stderr)
    assert (outcome.type, outcome.reason) == ("FAILED", reason)


@pytest.mark.parametrize(
    ("reason", "field", "before", "after"),
    [
        ("OOM_KILLED", "ram_mb", 1000, 1500),
        ("GPU_OOM", "vram_mb", 8000, 12000),
        ("OOM_KILLED", "ram_mb", 1 << 30, None),
    ],
)
def test_a_retry_after_oom_asks_for_more_of_what_ran_out(
    reason: str, field: str, before: int, after: int | None
) -> None:
    policy = RetryPolicy(max_attempts=2, retry_on=[FailureReason(reason)], grow_on_oom=1.5)
    record = running(retry_policy=policy, constraints=Constraints(**{field: before}))
    sm.apply_worker_event(record, event("FAILED", reason=reason, exit_code=137, error="out of memory"), NOW)
    assert (record.state, record.current.number) == (RunState.PENDING, 2)
    assert getattr(record.constraints, field) == (after or before)  # at the largest request already: as it was
    retried = record.events[-1]
    assert retried.type == "RETRIED"
    assert (f"{field} {before} -> {after}" in retried.msg) == (after is not None)


def test_without_grow_on_oom_or_a_retry_nothing_grows() -> None:
    same = running(retry_policy=RetryPolicy(max_attempts=2, retry_on=[FailureReason.OOM_KILLED]),
                   constraints=Constraints(ram_mb=1000))  # fmt: skip
    sm.apply_worker_event(same, event("FAILED", reason="OOM_KILLED", exit_code=137), NOW)
    assert (same.current.number, same.constraints.ram_mb) == (2, 1000)
    final = running(retry_policy=RetryPolicy(max_attempts=1, grow_on_oom=2), constraints=Constraints(ram_mb=1000))
    sm.apply_worker_event(final, event("FAILED", reason="OOM_KILLED", exit_code=137), NOW)
    assert (final.state, final.constraints.ram_mb) == (RunState.FAILED, 1000)
