"""The worker agent: heartbeats on their own task, a source of assignments, one task per attempt.

Start-up adopts the containers a previous life of this worker left behind (the server's heartbeat reply cancels the
ones that are no longer current). SIGTERM drains: no new work, attempts not yet started are given back, running ones
finish (up to the drain timeout), then the worker exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import gyoza
from gyoza.client import AsyncGyozaClient
from gyoza.errors import GyozaError
from gyoza.schema import Assignment, HeartbeatIn, HeldAttempt, WorkerCommand, WorkerEventIn, WorkerResources
from gyoza.worker.attempt import AttemptRunner, AttemptSettings, Refused
from gyoza.worker.runtimes.base import Execution, Runtime

log = logging.getLogger(__name__)

CLAIM_WAIT_S = 10.0
RETRY_AFTER_ERROR_S = 1.0
REPEAT_CLAIM_PAUSE_S = 0.5
FINISHED_MEMORY = 10_000

AssignmentSource = Callable[["WorkerAgent"], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class AgentSettings:
    worker_id: str
    tags: list[str]
    resources: WorkerResources
    heartbeat_interval_s: float
    drain_timeout_s: float | None


class WorkerAgent:
    def __init__(
        self, settings: AgentSettings, attempts: AttemptSettings, client: AsyncGyozaClient, runtime: Runtime
    ) -> None:
        self.settings = settings
        self.attempt_settings = attempts
        self.client = client
        self.runtime = runtime
        self.runners: dict[tuple[str, int], AttemptRunner] = {}
        self.tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self.finished: dict[tuple[str, int], None] = {}
        self.heartbeat_interval = settings.heartbeat_interval_s
        self.accepting = True

    async def run(self, stop: asyncio.Event, source: AssignmentSource | None = None) -> None:
        await self.adopt_orphans()
        heartbeats = asyncio.create_task(self._heartbeats(), name="heartbeats")
        intake = asyncio.create_task((source or claim_loop)(self), name="assignments")
        await stop.wait()
        log.info("worker %s draining", self.settings.worker_id)
        self.accepting = False
        intake.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await intake
        await self._give_back_unstarted()
        running = [task for task in self.tasks.values() if not task.done()]
        if running:
            await asyncio.wait(running, timeout=self.settings.drain_timeout_s)
        heartbeats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeats

    # --- attempts ----------------------------------------------------------------------------------------------

    def accept(self, assignment: Assignment) -> bool:
        """Start an attempt unless it runs already or ran (claims repeat assignments until STARTED); True if new."""
        key = (assignment.run_id, assignment.attempt)
        if not self.accepting or key in self.runners or key in self.finished:
            return False
        runner = AttemptRunner(assignment, self.attempt_settings, self.client, self.runtime)
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
        for orphan in await self.runtime.orphans(self.settings.worker_id, self.attempt_settings.work_dir):
            log.info("adopting run %s attempt %s from a previous life", orphan.run_id, orphan.attempt)
            placeholder = Assignment(
                run_id=orphan.run_id, attempt=orphan.attempt, image="", command=None, inputs={}, env={},
                constraints={}, gpu_ids=[], timeout_seconds=None, op_definition=None, definition_version=None,
                output_specs=None,
            )  # fmt: skip
            runner = AttemptRunner(placeholder, self.attempt_settings, self.client, self.runtime)
            self._track(runner, self._adopted(runner, orphan.execution))

    @staticmethod
    async def _adopted(runner: AttemptRunner, execution: Execution) -> None:
        with contextlib.suppress(Refused):
            await runner.supervise(execution, report_start=False)
        runner.dir.remove()

    async def _give_back_unstarted(self) -> None:
        for runner in list(self.runners.values()):
            if runner.started:
                continue
            runner.cancel()
            event = WorkerEventIn(
                attempt=runner.assignment.attempt,
                worker_id=self.settings.worker_id,
                type="UNASSIGNED",
                msg="worker shutting down",
            )
            with contextlib.suppress(GyozaError):
                await self.client.post_event(runner.assignment.run_id, event)

    # --- heartbeats --------------------------------------------------------------------------------------------

    def heartbeat_body(self) -> HeartbeatIn:
        held = [HeldAttempt(run_id=run_id, attempt=attempt) for run_id, attempt in self.runners]
        return HeartbeatIn(
            resources=self.settings.resources, tags=self.settings.tags, running=held, version=gyoza.__version__
        )

    async def _heartbeats(self) -> None:
        while True:
            try:
                reply = await self.client.heartbeat(self.settings.worker_id, self.heartbeat_body())
            except GyozaError as exc:
                log.warning("heartbeat failed: %s", exc.message)
            else:
                self.heartbeat_interval = reply.heartbeat_interval_s
                for command in reply.commands:
                    self.apply(command)
            await asyncio.sleep(self.heartbeat_interval)


async def claim_loop(agent: WorkerAgent) -> None:
    """REST mode: long-poll the claim endpoint (works through any HTTP proxy)."""
    while True:
        try:
            batch = await agent.client.claim(agent.settings.worker_id, wait=CLAIM_WAIT_S)
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
