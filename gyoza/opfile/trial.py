"""``gyoza op test``: run an op's image once, locally — no server, no worker process.

It drives the worker's own attempt runner (``gyoza.worker.attempt``) with a reporter that stands in for the server:
the same IO contract, mounts, environment, limits, event tailing, timeout and outcome as on a worker, and the
outputs checked against the output specs by the server's own rule (``gyoza.core.specs.output_failure``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gyoza.core.specs import output_failure
from gyoza.schema import Assignment, FailureReason, OpDefinitionIn, OutputSpec, WorkerEventIn
from gyoza.worker.attempt import AttemptRunner
from gyoza.worker.runtimes.docker import DockerRuntime
from gyoza.worker.settings import WorkerSettings

TRIAL_WORKER_ID = "gyoza-op-test"
STOP_GRACE_S = 5.0

EventSink = Callable[[str, "str | int"], None]


@dataclass(frozen=True)
class TrialResult:
    type: str  # COMPLETED, FAILED or CANCELLED
    outputs: dict[str, Any]
    reason: FailureReason | None
    error: str
    exit_code: int | None
    logs: str
    duration_s: float


class TerminalReporter:
    """Takes an attempt's reports in place of the server: PROGRESS and INFO go to ``on_event`` as they come; the
    final report and the logs are kept, and a COMPLETED whose outputs break the output specs becomes the failure
    the server would make of it."""

    def __init__(self, output_specs: Mapping[str, OutputSpec], on_event: EventSink) -> None:
        self.output_specs = output_specs
        self.on_event = on_event
        self.began = self.started = time.monotonic()
        self.final: TrialResult | None = None
        self.logs = b""

    async def post_event(self, run_id: str, event: WorkerEventIn) -> None:
        if event.type in ("PROGRESS", "INFO"):
            self.on_event(event.type, event.msg)
        elif event.type == "STARTED":
            self.started = time.monotonic()
        elif event.type in ("COMPLETED", "FAILED", "CANCELLED"):
            self.final = self._result(event)

    async def upload_logs(self, run_id: str, attempt: int, text: bytes, worker_id: str) -> None:
        self.logs = text

    def _result(self, event: WorkerEventIn) -> TrialResult:
        payload = event.payload
        outputs: dict[str, Any] = payload.get("outputs") or {}
        reason = FailureReason(payload["reason"]) if "reason" in payload else None
        error = str(payload.get("error", ""))
        kind = event.type
        failure = output_failure(outputs, self.output_specs) if kind == "COMPLETED" else None
        if failure is not None:
            kind, (reason, error) = "FAILED", failure
        duration = time.monotonic() - self.started
        logs = self.logs.decode(errors="replace")
        return TrialResult(kind, outputs, reason, error, payload.get("exit_code"), logs, duration)


async def run_trial(
    definition: OpDefinitionIn, inputs: dict[str, Any], network: str, on_event: EventSink
) -> TrialResult:
    """Run one attempt of ``definition`` with ``inputs`` (already checked against its input specs); Ctrl-C stops
    the container and ends it CANCELLED."""
    runtime = DockerRuntime(network=network, pull="never")
    reporter = TerminalReporter(definition.output_specs or {}, on_event)
    assignment = Assignment(
        run_id=f"op-test-{uuid.uuid4().hex[:12]}", attempt=1, image=definition.image, command=definition.command,
        inputs=inputs, env=definition.env, constraints=definition.constraints, gpu_ids=[],
        timeout_seconds=definition.timeout_seconds, op_definition=definition.name,
        definition_version=definition.version, output_specs=definition.output_specs,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gyoza-op-test-", ignore_cleanup_errors=True) as work_dir:
        settings = WorkerSettings(
            work_dir=Path(work_dir), name=TRIAL_WORKER_ID, network=network, pull="never", stop_grace=STOP_GRACE_S
        )
        runner = AttemptRunner(assignment, settings, reporter, runtime)
        try:
            with _on_interrupt(runner.cancel):
                await runner.run()
        finally:
            if runner.kept_for_adoption:  # an error cut the attempt short, and no later worker adopts it
                with contextlib.suppress(Exception):
                    for orphan in await runtime.orphans(TRIAL_WORKER_ID, settings.work_dir):
                        await orphan.execution.remove()
    assert reporter.final is not None, "the local reporter settles every final report"
    return reporter.final


@contextlib.contextmanager
def _on_interrupt(cancel: Callable[[], None]) -> Iterator[None]:
    """Ctrl-C cancels the attempt like a user's cancel (the container is stopped and removed), instead of
    interrupting the runner, which would leave the container behind for a worker to adopt."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, cancel)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
