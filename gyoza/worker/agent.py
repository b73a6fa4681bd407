"""The worker agent: heartbeats on their own task, a source of assignments, one task per attempt.

Start-up adopts the containers a previous life of this worker left behind (the server's heartbeat reply cancels the
ones that are no longer current). Shutdown is in two steps (``gyoza.processes.Shutdown``):

- a first SIGTERM/SIGINT drains: no new work, attempts not yet started are given back, running ones finish and are
  reported. When the drain timeout expires first, the ops still running are stopped (SIGTERM, then kill after the
  stop grace) and reported FAILED ``WORKER_LOST``, which the retry policy turns into a new attempt (SPEC §5.6);
- a second signal stops at once: whatever is still in hand is abandoned as it is and listed in the log. Those runs
  stay RUNNING on the server; the next start of this worker (same name and work dir) adopts the Docker containers
  it finds, running or exited, and reports them; the rest are failed ``WORKER_LOST`` and retried (SPEC §5.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import gyoza
from gyoza.client import AsyncGyozaClient
from gyoza.errors import GyozaError
from gyoza.processes import Shutdown
from gyoza.schema import (
    MAX_REPORTED_IMAGES,
    MAX_REPORTED_INSTANCES,
    Assignment,
    HeartbeatIn,
    HeartbeatReply,
    HeldAttempt,
    WorkerCommand,
    WorkerEventIn,
    WorkerResources,
)
from gyoza.supervision import stop_task
from gyoza.worker.attempt import AttemptRunner, Refused, Reporter
from gyoza.worker.runtimes.base import Execution, Runtime
from gyoza.worker.settings import WorkerSettings
from gyoza.worker.warm import InstancePool

log = logging.getLogger(__name__)

CLAIM_WAIT_S = 10.0
# How often the heartbeats' list of pulled images is read again.
IMAGES_EVERY_S = 30.0
RETRY_AFTER_ERROR_S = 1.0
REPEAT_CLAIM_PAUSE_S = 0.5
FINISHED_MEMORY = 10_000
# After the drain timeout: how long the stopped ops' final reports may take beyond the stop grace.
STOPPED_REPORT_GRACE_S = 10.0
# Giving back unstarted attempts must not hold up a shutdown when the server does not answer.
GIVE_BACK_TIMEOUT_S = 5.0

AssignmentSource = Callable[["WorkerAgent"], Coroutine[Any, Any, None]]


class ServerLink(Reporter, Protocol):
    """Where a worker's events, logs and heartbeats go: the REST client, or ``NatsReports`` in NATS mode."""

    async def heartbeat(self, worker_id: str, body: HeartbeatIn) -> HeartbeatReply: ...


class WorkerAgent:
    def __init__(
        self, settings: WorkerSettings, resources: WorkerResources, client: AsyncGyozaClient, runtime: Runtime,
        reports: ServerLink | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.resources = resources
        self.client = client  # claims; events, logs and heartbeats too unless ``reports`` takes them
        self.reports: ServerLink = reports or client
        self.runtime = runtime
        self.runners: dict[tuple[str, int], AttemptRunner] = {}
        self.tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self.finished: dict[tuple[str, int], None] = {}
        self.heartbeat_interval = settings.heartbeat_interval
        self.accepting = True
        self.images: list[str] = []  # the runtime's pulled images, reported in heartbeats
        self._images_read_at = -IMAGES_EVERY_S
        self._heartbeat_soon = asyncio.Event()  # something the server should hear of before the next interval
        self.pool = InstancePool(
            settings, runtime, resources, holding=lambda: [r.assignment for r in self.runners.values()],
            on_change=self._heartbeat_soon.set,
        )  # fmt: skip

    async def run(self, shutdown: Shutdown, source: AssignmentSource | None = None) -> None:
        await self.pool.start()
        await self.adopt_orphans()
        heartbeats = asyncio.create_task(self._heartbeats(), name="heartbeats")
        intake = asyncio.create_task((source or claim_loop)(self), name="assignments")
        await shutdown.requested.wait()
        self.accepting = False
        await stop_task(intake)
        try:
            await self._drain(shutdown)
            await self._until(shutdown.urgent, self.pool.close())
        finally:
            await stop_task(heartbeats)

    async def _drain(self, shutdown: Shutdown) -> None:
        """Give back what has not started, let the rest finish (bounded by the drain timeout), abandon on urgency."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GIVE_BACK_TIMEOUT_S):
                await self._until(shutdown.urgent, self._give_back_unstarted())
        timeout = self.settings.drain_timeout
        if self._in_flight():
            log.warning("worker %s draining: waiting %s for %s; signal again (Ctrl-C) to stop at once",
                        self.settings.name, "without limit" if timeout is None else f"up to {timeout:g} s",
                        self._listing())  # fmt: skip
        finished = await self._until(shutdown.urgent, self._finish(timeout))
        if finished and self._in_flight():  # the drain timeout expired
            message = f"worker {self.settings.name} shut down: the op was still running when the drain " \
                      f"timeout of {timeout} s expired, so it was stopped"  # fmt: skip
            log.warning("drain timeout expired: stopping %s", self._listing())
            for runner in self.runners.values():
                runner.stop_for_shutdown(message)
            await self._until(shutdown.urgent,
                              self._finish(self.settings.stop_grace + STOPPED_REPORT_GRACE_S))  # fmt: skip
        if self._in_flight():
            await self._abandon()

    def _in_flight(self) -> list[asyncio.Task[None]]:
        return [task for task in self.tasks.values() if not task.done()]

    async def _finish(self, within_s: float | None) -> None:
        """Wait for the attempts in hand to end, for at most ``within_s`` seconds (None: no limit)."""
        running = self._in_flight()
        if running:
            await asyncio.wait(running, timeout=within_s)

    @staticmethod
    async def _until(urgent: asyncio.Event, work: Awaitable[None]) -> bool:
        """Run ``work`` unless ``urgent`` is set first (then cancel it); True when it ran to the end."""
        task = asyncio.ensure_future(work)
        interrupt = asyncio.create_task(urgent.wait())
        try:
            await asyncio.wait({task, interrupt}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, interrupt):
                pending.cancel()
        return task.done() and not task.cancelled()

    async def _abandon(self) -> None:
        """Stop at once: leave every attempt still in hand as it is, and say what was left and how it recovers."""
        runners, tasks = list(self.runners.values()), self._in_flight()
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=GIVE_BACK_TIMEOUT_S)
        lines = [f"  run {r.assignment.run_id} attempt {r.assignment.attempt}: {r.abandoned_as()}" for r in runners]
        log.warning(
            "worker %s stopped at once and abandoned %d attempt(s). They are recovered when this worker starts again "
            "with the same name and work dir (SPEC 5.4): it adopts the containers it finds, running or exited, and "
            "reports them; the server fails attempts nobody holds any more with WORKER_LOST and retries them.\n%s",
            self.settings.name, len(runners), "\n".join(lines),
        )  # fmt: skip

    def _listing(self) -> str:
        keys = [f"{run_id} (attempt {attempt})" for run_id, attempt in self.runners]
        return f"{len(keys)} attempt(s): run " + ", ".join(keys)

    # --- attempts ----------------------------------------------------------------------------------------------

    def accept(self, assignment: Assignment) -> bool:
        """Start an attempt unless it runs already or ran (claims repeat assignments until STARTED); True if new."""
        key = (assignment.run_id, assignment.attempt)
        if not self.accepting or key in self.runners or key in self.finished:
            return False
        runner = AttemptRunner(assignment, self.settings, self.reports, self.runtime, self.pool)
        self._track(runner, runner.run())
        return True

    def _track(self, runner: AttemptRunner, work: Awaitable[None]) -> None:
        self.runners[runner.key] = runner
        task = asyncio.ensure_future(work)
        self.tasks[runner.key] = task
        task.add_done_callback(lambda _: self._forget(runner.key))

    def _forget(self, key: tuple[str, int]) -> None:
        self.runners.pop(key, None)
        self.tasks.pop(key, None)
        self.finished[key] = None
        if len(self.finished) > FINISHED_MEMORY:
            self.finished.pop(next(iter(self.finished)))

    def apply(self, command: WorkerCommand) -> None:
        runner = self.runners.get((command.run_id, command.attempt))
        if command.type == "cancel" and runner is not None:
            log.info("cancelling run %s attempt %s", command.run_id, command.attempt)
            runner.cancel()

    async def adopt_orphans(self) -> None:
        """Follow the containers a previous life left running; stale ones are cancelled by the first heartbeat."""
        for orphan in await self.runtime.orphans(self.settings.name, self.settings.work_dir):
            log.info("adopting run %s attempt %s from a previous life", orphan.run_id, orphan.attempt)
            placeholder = Assignment(
                run_id=orphan.run_id, attempt=orphan.attempt, image="", command=None, inputs={}, env={},
                constraints={}, gpu_ids=[], timeout_seconds=None, op_definition=None, definition_version=None,
                output_specs=None,
            )  # fmt: skip
            runner = AttemptRunner(placeholder, self.settings, self.reports, self.runtime)
            runner.started = True  # by the previous life: never "given back" by a drain
            self._track(runner, self._adopted(runner, orphan.execution))

    @staticmethod
    async def _adopted(runner: AttemptRunner, execution: Execution) -> None:
        try:
            with contextlib.suppress(Refused):
                await runner.supervise(execution, report_start=False)
        finally:
            runner.tidy()

    async def _give_back_unstarted(self) -> None:
        unstarted = [runner for runner in self.runners.values() if not runner.started]
        for runner in unstarted:
            runner.cancel()
        await asyncio.gather(*(self._give_back(runner) for runner in unstarted))

    async def _give_back(self, runner: AttemptRunner) -> None:
        event = WorkerEventIn(
            attempt=runner.assignment.attempt,
            worker_id=self.settings.name,
            type="UNASSIGNED",
            msg="worker shutting down",
        )
        with contextlib.suppress(GyozaError):
            await self.reports.post_event(runner.assignment.run_id, event)

    # --- heartbeats --------------------------------------------------------------------------------------------

    def heartbeat_body(self) -> HeartbeatIn:
        held = [HeldAttempt(run_id=run_id, attempt=attempt) for run_id, attempt in self.runners]
        return HeartbeatIn(
            resources=self.resources,
            tags=list(self.settings.tags),
            running=held,
            version=gyoza.__version__,
            images=self.images[:MAX_REPORTED_IMAGES],
            warm=self.pool.report()[:MAX_REPORTED_INSTANCES],
        )

    async def _heartbeats(self) -> None:
        while True:
            await self._read_images()
            self._heartbeat_soon.clear()  # this heartbeat tells what changed so far
            try:
                reply = await self.reports.heartbeat(self.settings.name, self.heartbeat_body())
            except GyozaError as exc:
                log.warning("heartbeat failed: %s", exc.message)
            else:
                self.heartbeat_interval = reply.heartbeat_interval_s
                for command in reply.commands:
                    self.apply(command)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._heartbeat_soon.wait(), self.heartbeat_interval)

    async def _read_images(self) -> None:
        """Every ``IMAGES_EVERY_S``: the images the runtime holds (an engine that fails to answer keeps the last)."""
        now = asyncio.get_running_loop().time()
        if now - self._images_read_at < IMAGES_EVERY_S:
            return
        self._images_read_at = now
        try:
            self.images = sorted(await self.runtime.images())
        except Exception as exc:  # the engine's hiccup must not stop the heartbeats
            log.warning("could not list the runtime's images: %s", exc)


async def claim_loop(agent: WorkerAgent) -> None:
    """REST mode: long-poll the claim endpoint (works through any HTTP proxy)."""
    while True:
        try:
            batch = await agent.client.claim(agent.settings.name, wait=CLAIM_WAIT_S)
        except GyozaError as exc:
            log.warning("claim failed: %s", exc.message)
            await asyncio.sleep(RETRY_AFTER_ERROR_S)
            continue
        accepted = [agent.accept(assignment) for assignment in batch.data]
        if batch.data and not any(accepted):
            # Only attempts still being prepared (starting a container, pulling an image): the claim answers those at
            # once, so wait until one of them is STARTED (then the next claim can bring new work) instead of spinning.
            await _until_one_leaves_assigned(agent, batch.data, REPEAT_CLAIM_PAUSE_S)


async def _until_one_leaves_assigned(agent: WorkerAgent, repeated: list[Assignment], limit_s: float) -> None:
    runners = [agent.runners.get((a.run_id, a.attempt)) for a in repeated]
    waits = [asyncio.create_task(r.left_assigned.wait()) for r in runners if r is not None]
    if not waits:
        await asyncio.sleep(limit_s)
        return
    await asyncio.wait(waits, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
