"""One attempt on this worker, from assignment to final report (SPEC §6-7).

prepare /gyoza -> image present? (else IMAGE_NOT_FOUND) -> start (else CONTAINER_ERROR) -> STARTED -> forward
events.jsonl lines live and upload logs as they grow -> exit, timeout or cancel -> final logs -> COMPLETED with
outputs | FAILED with a reason | CANCELLED -> remove the container and the directory.

Every report carries (run, attempt). When the server refuses one because the attempt is no longer current (or the
run was cancelled meanwhile), the runner stops its container at once: a zombie never keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gyoza.client import AsyncGyozaClient
from gyoza.errors import Conflict, GyozaError, InvalidRequest, NotFound
from gyoza.schema import Assignment, FailureReason, WorkerEventIn, WorkerEventType
from gyoza.worker.iocontract import AttemptDir, ExitStatus, Outcome, parse_event_line
from gyoza.worker.runtimes.base import (
    Execution,
    ImageMissing,
    LaunchFailed,
    LaunchSpec,
    LogCapture,
    Runtime,
)

log = logging.getLogger(__name__)

EVENTS_POLL_S = 0.1
LOG_UPLOAD_EVERY_S = 5.0
REPORT_RETRY_S = 1.0
REPORT_ATTEMPTS = 30


class Refused(Exception):
    """The server refused a report for this attempt (stale, or the run moved on): stop working on it."""


@dataclass(frozen=True)
class AttemptSettings:
    worker_id: str
    work_dir: Path
    stop_grace_s: float
    log_limit: int
    container_io_dir: str | None  # None: the runtime passes the host path (process runtime)


class AttemptRunner:
    def __init__(
        self, assignment: Assignment, settings: AttemptSettings, client: AsyncGyozaClient, runtime: Runtime
    ) -> None:
        self.assignment = assignment
        self.settings = settings
        self.client = client
        self.runtime = runtime
        self.dir = AttemptDir(settings.work_dir, assignment.run_id, assignment.attempt)
        self.logs = LogCapture(settings.log_limit)
        self.started = False
        # Set once the server no longer lists this attempt as ASSIGNED (it reported STARTED, or the attempt ended).
        self.left_assigned = asyncio.Event()
        self.cancel_requested = asyncio.Event()
        self._uploaded_version = -1
        self._events_offset = 0
        self._events_lock = asyncio.Lock()

    @property
    def key(self) -> tuple[str, int]:
        return self.assignment.run_id, self.assignment.attempt

    def cancel(self) -> None:
        self.cancel_requested.set()

    # --- the whole attempt -------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except Refused as exc:
            log.info("run %s attempt %s: %s", *self.key, exc)
        finally:
            self.left_assigned.set()
            self.dir.remove()

    async def _run(self) -> None:
        a = self.assignment
        self.dir.prepare(a.inputs)
        try:
            await self.runtime.ensure_image(a.image)
        except ImageMissing as exc:
            await self._report_outcome(Outcome("FAILED", reason=FailureReason.IMAGE_NOT_FOUND, error=str(exc)))
            return
        if self.cancel_requested.is_set():
            await self._report_outcome(Outcome("CANCELLED"))
            return
        try:
            execution = await self.runtime.launch(self._launch_spec(), self.logs)
        except ImageMissing as exc:
            await self._report_outcome(Outcome("FAILED", reason=FailureReason.IMAGE_NOT_FOUND, error=str(exc)))
            return
        except LaunchFailed as exc:
            await self._report_outcome(Outcome("FAILED", reason=FailureReason.CONTAINER_ERROR, error=str(exc)))
            return
        await self.supervise(execution, report_start=True)

    async def supervise(self, execution: Execution, report_start: bool) -> None:
        """Follow a started execution to its end and report it (also used to adopt a previous life's container)."""
        self.logs = execution.logs
        try:
            if report_start:
                await self._report("STARTED", "started")
            self.started = True
            self.left_assigned.set()
            status = await self._follow(execution)
            await self._upload_logs(final=True)
            await self._report_outcome(self.dir.outcome(status, self.logs.stderr_tail()))
        except Refused:
            await execution.stop(self.settings.stop_grace_s)
            raise
        finally:
            await execution.remove()

    async def _follow(self, execution: Execution) -> ExitStatus:
        """Wait for the exit while forwarding events and logs; stop on cancel or timeout."""
        helpers = [asyncio.create_task(self._forward_events()), asyncio.create_task(self._upload_logs_periodically())]
        exited = asyncio.create_task(execution.wait())
        cancelled = asyncio.create_task(self.cancel_requested.wait())
        try:
            done, _ = await asyncio.wait(
                {exited, cancelled}, timeout=self.assignment.timeout_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            if exited in done:
                status = exited.result()
            else:
                await execution.stop(self.settings.stop_grace_s)
                status = await exited
                status = ExitStatus(
                    status.exit_code, status.oom_killed, timed_out=cancelled not in done, cancelled=cancelled in done
                )
            # Waits for a live pass still reporting (the lock), then reports what is left: the op's last lines
            # often land just before it exits.
            await self._forward_events_once()
            return status
        finally:
            for task in (*helpers, cancelled):
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError, Refused):
                    await task

    # --- live events and logs ----------------------------------------------------------------------------------

    async def _forward_events(self) -> None:
        try:
            while True:
                await self._forward_events_once()
                await asyncio.sleep(EVENTS_POLL_S)
        except Refused:
            self.cancel()  # the attempt is no longer current: stop the container now

    async def _forward_events_once(self) -> None:
        # One pass at a time: the final pass must neither overtake nor repeat a live pass that is still reporting.
        async with self._events_lock:
            path = self.dir.events_file
            if not path.exists():
                return
            with path.open("rb") as events:
                events.seek(self._events_offset)
                data = events.read()
            for line in data.split(b"\n")[:-1]:  # complete lines only: the op may be mid-write of the last one
                event = parse_event_line(line.decode(errors="replace"))
                if event is not None:
                    await self._report(*event)
                self._events_offset += len(line) + 1  # per line, once reported

    async def _upload_logs_periodically(self) -> None:
        while True:
            await asyncio.sleep(LOG_UPLOAD_EVERY_S)
            await self._upload_logs(final=False)

    async def _upload_logs(self, final: bool) -> None:
        if self.logs.version == self._uploaded_version and not final:
            return
        version = self.logs.version
        try:
            await self.client.upload_logs(self.assignment.run_id, self.assignment.attempt, self.logs.text())
            self._uploaded_version = version
        except GyozaError as exc:
            log.warning("uploading logs of run %s failed: %s", self.assignment.run_id, exc.message)

    # --- reports -----------------------------------------------------------------------------------------------

    async def _report_outcome(self, outcome: Outcome) -> None:
        payload: dict[str, Any] = {"exit_code": outcome.exit_code}
        if outcome.type == "COMPLETED":
            payload["outputs"] = outcome.outputs
        elif outcome.type == "FAILED":
            assert outcome.reason is not None
            payload.update(reason=outcome.reason.value, error=outcome.error[-100_000:])
        await self._report(outcome.type, outcome.error[:10_000] if outcome.type == "FAILED" else "", payload)

    async def _report(self, type_: WorkerEventType, msg: str | int, payload: dict[str, Any] | None = None) -> None:
        """Send an event, retrying while the server is unreachable; ``Refused`` when it says no."""
        event = WorkerEventIn(
            attempt=self.assignment.attempt,
            worker_id=self.settings.worker_id,
            type=type_,
            msg=msg,
            payload=payload or {},
        )
        for _ in range(REPORT_ATTEMPTS):
            try:
                await self.client.post_event(self.assignment.run_id, event)
                return
            except (Conflict, NotFound) as exc:
                raise Refused(f"{type_} refused: {exc.message}") from None
            except InvalidRequest as exc:
                log.error("run %s: the server rejected %s: %s %s", self.assignment.run_id, type_, exc.message,
                          exc.details)  # fmt: skip
                return
            except GyozaError as exc:
                log.warning("reporting %s for run %s failed (%s); retrying", type_, self.assignment.run_id, exc)
                await asyncio.sleep(REPORT_RETRY_S)
        log.error("giving up reporting %s for run %s", type_, self.assignment.run_id)

    def _launch_spec(self) -> LaunchSpec:
        a = self.assignment
        io_dir = self.settings.container_io_dir or str(self.dir.path)
        env = {
            **a.env,
            "GYOZA_RUN_ID": a.run_id,
            "GYOZA_ATTEMPT": str(a.attempt),
            "GYOZA_OP_NAME": a.op_definition or "",
            "GYOZA_OP_VERSION": a.definition_version or "",
            "GYOZA_GPU_IDS": ",".join(str(i) for i in a.gpu_ids),
            "GYOZA_IO_DIR": io_dir,
        }
        return LaunchSpec(
            run_id=a.run_id, attempt=a.attempt, worker_id=self.settings.worker_id, image=a.image, command=a.command,
            env=env, cpu=a.constraints.cpu, ram_mb=a.constraints.ram_mb, gpu_ids=list(a.gpu_ids),
            io_dir=self.dir.path,
        )  # fmt: skip
