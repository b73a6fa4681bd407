"""One attempt on this worker, from assignment to final report (SPEC §6-7).

prepare /gyoza -> image present? (else IMAGE_NOT_FOUND) -> start (else CONTAINER_ERROR) -> STARTED -> forward
events.jsonl lines live and upload logs as they grow -> exit, timeout or cancel -> final logs -> COMPLETED with
outputs | FAILED with a reason | CANCELLED -> remove the container and the directory.

Every report carries (run, attempt). When the server refuses one because the attempt is no longer current (or the
run was cancelled meanwhile), the runner stops its container at once: a zombie never keeps running. Only what may
pass later is retried (no answer, or a 5xx), for a bounded time; any other 4xx is final. Outputs too large for a
report (the server takes bodies up to 1 MiB) fail the attempt with ``OUTPUT_TOO_LARGE`` instead of being sent.

The container and the attempt directory are removed only once the final report is settled (the server took it or
refused it). When it is not — the server did not answer, or the worker stopped at once — a Docker container stays,
exited or running, for the next start of this worker to adopt and report (SPEC §5.4).

Reports go to a ``Reporter``: the server (``AsyncGyozaClient`` is one) on a worker, the terminal for ``gyoza op test``
(``gyoza.opfile.trial``), so both run an op through this one pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from gyoza.errors import Conflict, GyozaError, InvalidRequest, NotFound, PayloadTooLarge
from gyoza.schema import Assignment, FailureReason, LogChunkIn, WorkerEventIn, WorkerEventType
from gyoza.worker.iocontract import AttemptDir, ExitStatus, Outcome, parse_event_line
from gyoza.worker.launch import launch_spec
from gyoza.worker.logchunks import log_chunks
from gyoza.worker.runtimes.base import (
    TRUNCATED_MARKER,
    Execution,
    ImageMissing,
    LaunchFailed,
    LogCapture,
    Runtime,
)
from gyoza.worker.settings import WorkerSettings
from gyoza.worker.telemetry import UsageMeter, sample_gpus
from gyoza.worker.warm import InstancePool, serves

log = logging.getLogger(__name__)

EVENTS_POLL_S = 0.1
LOG_UPLOAD_EVERY_S = 5.0
# New log lines go out live this often (for GET /runs/{id}/stream and ``gyoza runs logs -f``).
LOG_SHIP_EVERY_S = 0.25
# Retries of a report the server did not answer: first pause, longest pause, and how long to keep trying.
REPORT_RETRY_FIRST_S = 0.5
REPORT_RETRY_MAX_S = 5.0
REPORT_DEADLINE_S = 60.0
# The server refuses request bodies over 1 MiB (SPEC §4); a COMPLETED report carries the outputs in its body.
MAX_REPORT_BYTES = 1024 * 1024


class Refused(Exception):
    """The server refused a report for this attempt (stale, or the run moved on): stop working on it."""


class Unanswered(Exception):
    """The server did not take a report within ``REPORT_DEADLINE_S`` (unreachable, or answering 5xx)."""


class Reporter(Protocol):
    """Where an attempt's reports go. It answers as the server does: ``Conflict``/``NotFound`` when the attempt moved
    on, another 4xx ``GyozaError`` for a report it refuses, a 5xx or ``Unavailable`` for one that may pass later."""

    async def post_event(self, run_id: str, event: WorkerEventIn) -> object: ...

    async def upload_logs(self, run_id: str, attempt: int, text: bytes, worker_id: str) -> None: ...


@runtime_checkable
class LogShipper(Protocol):
    """A reporter that also takes log lines live (the server); ``gyoza op test``'s terminal does not need to."""

    async def ship_logs(self, run_id: str, chunk: LogChunkIn) -> object: ...


class AttemptRunner:
    def __init__(
        self, assignment: Assignment, settings: WorkerSettings, reporter: Reporter, runtime: Runtime,
        pool: InstancePool | None = None,
    ) -> None:  # fmt: skip
        self.assignment = assignment
        self.settings = settings
        self.reporter = reporter
        self.runtime = runtime
        self.pool = pool  # the worker's warm instances (None: every attempt starts cold, as ``gyoza op test`` does)
        self.dir = AttemptDir(settings.work_dir, assignment.run_id, assignment.attempt)
        self.logs = LogCapture(settings.log_limit)
        self.meter = UsageMeter()
        self.started = False
        self.exited = False
        # Set once the server no longer lists this attempt as ASSIGNED (it reported STARTED, or the attempt ended).
        self.left_assigned = asyncio.Event()
        self.cancel_requested = asyncio.Event()
        self.shutdown_message = ""  # set when the worker's shutdown stops the op: reported as WORKER_LOST
        self.settled = False  # the server took (or refused) the final report: nothing is left to recover
        self.kept_for_adoption = False  # left to a later life of the worker (see ``abandoned_as``)
        self._uploaded_version = -1
        self._events_offset = 0
        self._events_lock = asyncio.Lock()
        self._shipped_lines = 0  # lines of the capture shipped live
        self._shipped_chunks = 0
        self._shipped_marker = False
        self._ship_lock = asyncio.Lock()

    @property
    def key(self) -> tuple[str, int]:
        return self.assignment.run_id, self.assignment.attempt

    def cancel(self) -> None:
        self.cancel_requested.set()

    def stop_for_shutdown(self, message: str) -> None:
        """Stop the op like a cancel, but report it as lost with the worker (so it is retried), saying why."""
        self.shutdown_message = message
        self.cancel_requested.set()

    def abandoned_as(self) -> str:
        """What became of this attempt when the worker stopped without settling it (for the shutdown message)."""
        if self.kept_for_adoption:
            where = "exited" if self.exited else "keeps running"
            return f"RUNNING on the server; its container {where} and is adopted by the worker's next start"
        if not self.started:
            return "not started yet; given back to the queue, or redelivered by the next claim"
        if self.exited:
            return "RUNNING on the server; the op ended but its outcome was not reported, so it will be retried"
        return "RUNNING on the server; its process was killed with the worker, so it will be retried"

    def tidy(self) -> None:
        """Remove the attempt directory unless a later life of the worker needs it to adopt the attempt."""
        if not self.kept_for_adoption:
            self.dir.remove()

    # --- the whole attempt -------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except Refused as exc:
            log.info("run %s attempt %s: %s", *self.key, exc)
        finally:
            self.left_assigned.set()
            self.tidy()

    async def _run(self) -> None:
        a = self.assignment
        if a.secret_error is not None:  # the server could not release a secret the op needs: start nothing
            await self._report_outcome(Outcome("FAILED", reason=FailureReason.CONTAINER_ERROR, error=a.secret_error))
            return
        warm = self.pool is not None and serves(a)
        if not warm:  # a warm attempt's directory is made in its instance's
            self.dir.prepare(a.inputs)
        self.logs.mask(a.secret_env.values())
        try:
            await self.runtime.ensure_image(a.image, a.pull_credential)
        except ImageMissing as exc:
            await self._report_outcome(Outcome("FAILED", reason=FailureReason.IMAGE_NOT_FOUND, error=str(exc)))
            return
        if self.cancel_requested.is_set():
            await self._report_outcome(Outcome("CANCELLED"))
            return
        try:
            execution = await self._launch(warm)
        except ImageMissing as exc:
            await self._report_outcome(Outcome("FAILED", reason=FailureReason.IMAGE_NOT_FOUND, error=str(exc)))
            return
        except LaunchFailed as exc:
            await self._report_outcome(Outcome("FAILED", reason=FailureReason.CONTAINER_ERROR, error=str(exc)))
            return
        await self.supervise(execution, report_start=True)

    async def _launch(self, warm: bool) -> Execution:
        if self.pool is not None and warm:
            attempt = await self.pool.take(self.assignment, self.logs)
            self.dir = attempt.dir
            return attempt
        if self.pool is not None:
            await self.pool.make_room(self.assignment)
        return await self.runtime.launch(launch_spec(self.assignment, self.settings, self.dir.path), self.logs)

    async def supervise(self, execution: Execution, report_start: bool) -> None:
        """Follow a started execution to its end and report it (also used to adopt a previous life's container)."""
        self.logs, self.meter = execution.logs, execution.meter
        try:
            if report_start:
                await self._report("STARTED", "started")
            self.started = True
            self.left_assigned.set()
            status = await self._follow(execution)
            self.exited = True
            await self._ship_logs()  # before the outcome: a stream that sees the end has every line by then
            await self._upload_logs(final=True)
            await self._report_outcome(self._outcome(status))
        except Refused:
            self.settled = True
            await execution.stop(self.settings.stop_grace)
            raise
        finally:
            if self.settled:
                await execution.remove()
            else:
                self.kept_for_adoption = execution.abandon()

    def _outcome(self, status: ExitStatus) -> Outcome:
        if status.cancelled and self.shutdown_message:
            return Outcome("FAILED", reason=FailureReason.WORKER_LOST, error=self.shutdown_message,
                           exit_code=status.exit_code)  # fmt: skip
        return self.dir.outcome(status, self.logs.stderr_tail())

    async def _follow(self, execution: Execution) -> ExitStatus:
        """Wait for the exit while forwarding events and logs; stop on cancel or timeout."""
        helpers = [asyncio.create_task(self._forward_events()), asyncio.create_task(self._upload_logs_periodically()),
                   asyncio.create_task(self._ship_logs_periodically())]  # fmt: skip
        if self.assignment.gpu_ids:
            helpers.append(asyncio.create_task(sample_gpus(self.meter, list(self.assignment.gpu_ids))))
        exited = asyncio.create_task(execution.wait())
        cancelled = asyncio.create_task(self.cancel_requested.wait())
        try:
            done, _ = await asyncio.wait(
                {exited, cancelled}, timeout=self.assignment.timeout_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            if exited in done:
                status = exited.result()
            else:
                await execution.stop(self.settings.stop_grace)
                status = await exited
                status = ExitStatus(
                    status.exit_code, status.oom_killed, timed_out=cancelled not in done, cancelled=cancelled in done
                )
            # Waits for a live pass still reporting (the lock), then reports what is left: the op's last lines
            # often land just before it exits.
            await self._forward_events_once()
            return status
        finally:
            for task in (*helpers, cancelled, exited):  # ``exited`` too when the worker stops at once
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

    async def _ship_logs_periodically(self) -> None:
        while isinstance(self.reporter, LogShipper):
            await asyncio.sleep(LOG_SHIP_EVERY_S)
            await self._ship_logs()

    async def _ship_logs(self) -> None:
        """Ship the lines captured since the last shipment, in numbered chunks: a chunk that got no answer is sent
        again with its number (stored once). Only what the capture keeps goes out, so the per-attempt limit holds."""
        if not isinstance(self.reporter, LogShipper):
            return
        async with self._ship_lock:
            lines, _, truncated = self.logs.since(self._shipped_lines)
            marker = truncated and not self._shipped_marker
            for text, count in log_chunks(lines, TRUNCATED_MARKER if marker else b""):
                chunk = LogChunkIn(attempt=self.assignment.attempt, worker_id=self.settings.name,
                                   chunk=self._shipped_chunks + 1, text=text)  # fmt: skip
                try:
                    await self.reporter.ship_logs(self.assignment.run_id, chunk)
                except GyozaError as exc:
                    log.warning("live log lines of run %s not shipped: %s", self.assignment.run_id, exc.message)
                    return
                self._shipped_chunks += 1
                self._shipped_lines += count
            self._shipped_marker = self._shipped_marker or marker

    async def _upload_logs(self, final: bool) -> None:
        """Upload the log so far. The final upload is retried like a report (an outage must not lose the log of an
        op that ended meanwhile); one on the way is not: the next one, a few seconds on, carries it all."""
        if self.logs.version == self._uploaded_version and not final:
            return
        version, a = self.logs.version, self.assignment

        async def upload() -> None:
            await self.reporter.upload_logs(a.run_id, a.attempt, self.logs.text(), self.settings.name)

        try:
            await (self._retrying("the log", upload) if final else upload())
            self._uploaded_version = version
        except Unanswered as exc:
            log.error("run %s attempt %s: %s", *self.key, exc)
        except GyozaError as exc:
            log.warning("uploading logs of run %s failed: %s", self.assignment.run_id, exc.message)

    # --- reports -----------------------------------------------------------------------------------------------

    async def _report_outcome(self, outcome: Outcome) -> None:
        """The final report. A COMPLETED the server cannot take (too large, invalid) becomes a FAILED saying why."""
        event = self._outcome_event(outcome)
        if outcome.type == "COMPLETED" and len(event.model_dump_json().encode()) > MAX_REPORT_BYTES:
            size = len(json.dumps(outcome.outputs, ensure_ascii=False, separators=(",", ":")).encode())
            event = self._outcome_event(Outcome(
                "FAILED", reason=FailureReason.OUTPUT_TOO_LARGE, exit_code=outcome.exit_code,
                error=f"the outputs are {size:,} bytes as JSON, over the limit of {MAX_REPORT_BYTES:,} bytes (1 MiB) "
                      "for a run's outputs; store large results elsewhere and return a reference to them",
            ))  # fmt: skip
        rejected = await self._settle(event)
        if event.type == "COMPLETED" and isinstance(rejected, PayloadTooLarge | InvalidRequest):
            too_large = isinstance(rejected, PayloadTooLarge)
            fallback = Outcome(
                "FAILED", reason=FailureReason.OUTPUT_TOO_LARGE if too_large else FailureReason.OUTPUT_INVALID,
                error=f"the server refused the outputs: {rejected.message}", exit_code=outcome.exit_code,
            )  # fmt: skip
            await self._settle(self._outcome_event(fallback))

    async def _settle(self, event: WorkerEventIn) -> GyozaError | None:
        """Send a final report. It is settled once the server answered: it took it, or rejected it with a 4xx
        (returned; sending it again cannot help). One the server never answered leaves the attempt to recover."""
        try:
            await self._send(event)
        except Unanswered as exc:
            log.error("run %s attempt %s: %s", *self.key, exc)
            return None
        except GyozaError as exc:
            log.error("run %s: the server rejected %s: %s %s", self.assignment.run_id, event.type, exc.message,
                      exc.details)  # fmt: skip
            self.settled = True
            return exc
        self.settled = True
        return None

    def _outcome_event(self, outcome: Outcome) -> WorkerEventIn:
        payload: dict[str, Any] = {"exit_code": outcome.exit_code}
        usage = self.meter.summary()
        if usage is not None and outcome.type != "CANCELLED":
            payload["usage"] = usage.model_dump(mode="json")
        if outcome.type == "COMPLETED":
            payload["outputs"] = outcome.outputs
        elif outcome.type == "FAILED":
            assert outcome.reason is not None
            payload.update(reason=outcome.reason.value, error=outcome.error[-100_000:])
        return self._event(outcome.type, outcome.error[:10_000] if outcome.type == "FAILED" else "", payload)

    def _event(self, type_: WorkerEventType, msg: str | int, payload: dict[str, Any] | None = None) -> WorkerEventIn:
        return WorkerEventIn(
            attempt=self.assignment.attempt,
            worker_id=self.settings.name,
            type=type_,
            msg=msg,
            payload=payload or {},
        )

    async def _report(self, type_: WorkerEventType, msg: str | int) -> None:
        """A report on the way (STARTED, PROGRESS, INFO): ``Refused`` when the attempt moved on; else best effort."""
        try:
            await self._send(self._event(type_, msg))
        except Unanswered as exc:
            log.error("run %s attempt %s: %s", *self.key, exc)
        except GyozaError as exc:
            log.error("run %s: the server rejected %s: %s %s", self.assignment.run_id, type_, exc.message,
                      exc.details)  # fmt: skip

    async def _send(self, event: WorkerEventIn) -> None:
        """Post an event (retried as ``_retrying`` says). Raises ``Refused`` on 409/404, the error itself on any other
        4xx, ``Unanswered`` at the end."""
        try:
            await self._retrying(event.type, lambda: self.reporter.post_event(self.assignment.run_id, event))
        except (Conflict, NotFound) as exc:
            raise Refused(f"{event.type} refused: {exc.message}") from None

    async def _retrying(self, what: str, call: Callable[[], Awaitable[object]]) -> None:
        """Make ``call``, retrying with growing pauses for up to ``REPORT_DEADLINE_S`` only what may pass later: no
        answer or a 5xx. A 4xx is raised at once, ``Unanswered`` at the end. A cancel of the calling task (the worker
        stopping at once) interrupts it at any point."""
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + REPORT_DEADLINE_S, REPORT_RETRY_FIRST_S
        while True:
            try:
                await call()
                return
            except GyozaError as exc:
                if exc.status < 500:
                    raise
                if loop.time() + pause > deadline:
                    raise Unanswered(f"gave up reporting {what} after {REPORT_DEADLINE_S:g} s: {exc}") from None
                log.warning("reporting %s for run %s failed (%s); retrying", what, self.assignment.run_id, exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, REPORT_RETRY_MAX_S)
