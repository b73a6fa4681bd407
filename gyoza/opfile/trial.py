"""``gyoza op test``: run an op's image once, locally, through the IO contract — no server, no worker.

It uses the worker's own pieces (the Docker runtime, the attempt directory and how it decides the outcome), so an
op that passes here behaves the same on a worker: same mounts, environment, limits and output rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gyoza.core.specs import output_problems
from gyoza.schema import FailureReason, OpDefinitionIn
from gyoza.worker.iocontract import CONTAINER_IO_DIR, AttemptDir, ExitStatus, Outcome, parse_event_line
from gyoza.worker.runtimes.base import Execution, LaunchSpec, LogCapture
from gyoza.worker.runtimes.docker import DockerRuntime

TRIAL_WORKER_ID = "gyoza-op-test"
EVENTS_POLL_S = 0.05
STOP_GRACE_S = 5.0

EventSink = Callable[[str, "str | int"], None]


@dataclass(frozen=True)
class TrialResult:
    outcome: Outcome
    logs: str
    duration_s: float


async def run_trial(
    definition: OpDefinitionIn, inputs: dict[str, Any], network: str, on_event: EventSink
) -> TrialResult:
    """Run one attempt of ``definition`` with ``inputs`` (already checked against its input specs)."""
    runtime = DockerRuntime(network=network, pull="never")
    await runtime.ensure_image(definition.image)
    run_id = f"op-test-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="gyoza-op-test-", ignore_cleanup_errors=True) as work_dir:
        attempt_dir = AttemptDir(Path(work_dir), run_id, 1)
        attempt_dir.prepare(inputs)
        env = {
            **definition.env,
            "GYOZA_RUN_ID": run_id,
            "GYOZA_ATTEMPT": "1",
            "GYOZA_OP_NAME": definition.name,
            "GYOZA_OP_VERSION": definition.version,
            "GYOZA_GPU_IDS": "",
            "GYOZA_IO_DIR": CONTAINER_IO_DIR,
        }
        spec = LaunchSpec(
            run_id=run_id, attempt=1, worker_id=TRIAL_WORKER_ID, image=definition.image, command=definition.command,
            env=env, cpu=definition.constraints.cpu, ram_mb=definition.constraints.ram_mb, gpu_ids=[],
            io_dir=attempt_dir.path,
        )  # fmt: skip
        logs = LogCapture()
        started = time.monotonic()
        execution = await runtime.launch(spec, logs)
        try:
            status = await _follow(execution, attempt_dir.events_file, definition.timeout_seconds, on_event)
        finally:
            await execution.remove()
        outcome = attempt_dir.outcome(status, logs.stderr_tail())
        duration = time.monotonic() - started
    return TrialResult(_check_outputs(outcome, definition), logs.text().decode(errors="replace"), duration)


async def _follow(execution: Execution, events_file: Path, limit_s: float | None, on_event: EventSink) -> ExitStatus:
    offset = 0

    def forward() -> None:
        nonlocal offset
        if not events_file.exists():
            return
        with events_file.open("rb") as events:
            events.seek(offset)
            data = events.read()
        complete = data[: data.rfind(b"\n") + 1]
        offset += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            event = parse_event_line(line)
            if event is not None:
                on_event(*event)

    exited = asyncio.create_task(execution.wait())
    deadline = None if limit_s is None else time.monotonic() + limit_s
    timed_out = False
    try:
        # Poll the events file while the container runs: the op appends lines to it as it goes.
        while not exited.done():
            forward()
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                await execution.stop(STOP_GRACE_S)
                break
            await asyncio.wait({exited}, timeout=EVENTS_POLL_S)
        status = await exited
    finally:
        if not exited.done():
            exited.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await exited
    forward()
    return ExitStatus(status.exit_code, status.oom_killed, timed_out=timed_out)


def _check_outputs(outcome: Outcome, definition: OpDefinitionIn) -> Outcome:
    """Outputs that break the output specs fail the attempt, as the server would (OUTPUT_INVALID/OUTPUT_MISSING)."""
    if outcome.type != "COMPLETED" or not definition.output_specs:
        return outcome
    problems = output_problems(outcome.outputs, definition.output_specs)
    if not problems:
        return outcome
    only_missing = all(p["problem"] == "required output is missing" for p in problems)
    reason = FailureReason.OUTPUT_MISSING if only_missing else FailureReason.OUTPUT_INVALID
    error = "outputs do not match output_specs: " + "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
    return Outcome("FAILED", outputs=outcome.outputs, reason=reason, error=error, exit_code=outcome.exit_code)
