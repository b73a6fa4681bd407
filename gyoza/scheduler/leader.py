"""The scheduler: keeps the cluster model on every replica, and in the lease holder places runs on workers.

While leader it consumes ``gyoza.runs.requested`` (durable consumer ``scheduler``) and answers heartbeats on
``gyoza.workers.<id>.heartbeat``; a placement loop puts the best pending runs on the workers they fit (SPEC §5.2-5.3),
a liveness loop evicts silent workers, and a reasons loop keeps every waiting run's ``state_reason`` honest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from gyoza.bus import messaging, names
from gyoza.bus.connection import Bus
from gyoza.core.placement import Demand, best_worker, pending_reason
from gyoza.core.views import assignment, run_view
from gyoza.errors import GyozaError, InvalidRequest, RunNotFound
from gyoza.scheduler.lease import Lease
from gyoza.scheduler.ledger import Held
from gyoza.scheduler.liveness import Liveness
from gyoza.scheduler.queue import QueuedRun
from gyoza.scheduler.state import ClusterState
from gyoza.schema import HeartbeatIn, RunRecord, RunRequested, RunState, WorkerCommand, validation_problems
from gyoza.services.runs import RunService
from gyoza.services.workers import WorkerService
from gyoza.settings import Settings

log = logging.getLogger(__name__)

MAX_WRITES_IN_FLIGHT = 128
LIVENESS_CHECK_S = 0.2
REASONS_EVERY_S = 1.0
REASON_WRITES_PER_LANE = 200


class Scheduler:
    def __init__(self, bus: Bus, runs: RunService, workers: WorkerService, settings: Settings, node_id: str) -> None:
        self.bus = bus
        self.runs = runs
        self.state = ClusterState()
        self.lease = Lease(bus, node_id, settings.lease_ttl)
        self.lease_ttl = settings.lease_ttl
        self.liveness = Liveness(
            self.state, runs, workers, settings.heartbeat_interval, settings.worker_timeout, self.wake
        )
        self.is_leader = False
        self._wake = asyncio.Event()
        self._writes = asyncio.Semaphore(MAX_WRITES_IN_FLIGHT)
        self._blocked: set[Demand] = set()
        self._lease_task: asyncio.Task[None] | None = None
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._subscriptions: list[messaging.Stoppable] = []
        self._background: set[asyncio.Task[None]] = set()

    # --- every replica -----------------------------------------------------------------------------------------

    async def on_run(self, record: RunRecord, revision: int) -> None:
        """Run feed listener: keep the model current; tell a worker at once when a cancel is requested."""
        cancelled = self.state.apply(record, revision)
        if self.is_leader:
            if cancelled is not None:
                await self._send_cancel(cancelled)
            self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        """Try for the lease once right away (a lone server is leader before it answers), then keep at it."""
        try:
            if await self.lease.acquire():
                await self._lead()
        except GyozaError as exc:
            log.warning("scheduler lease check failed: %s", exc.message)
        self._lease_task = asyncio.create_task(self._hold_lease(), name="scheduler-lease")

    async def stop(self) -> None:
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        if self.is_leader:
            await self._step_down()
            await self.lease.release()

    async def _hold_lease(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / (3 if self.is_leader else 5))
            try:
                if self.is_leader and not await self.lease.renew():
                    log.warning("scheduler lease lost; standing by")
                    await self._step_down()
                elif not self.is_leader and await self.lease.acquire():
                    await self._lead()
            except GyozaError as exc:
                log.warning("scheduler lease check failed: %s", exc.message)

    # --- leader only -------------------------------------------------------------------------------------------

    async def _lead(self) -> None:
        log.info("this server is now the scheduler leader")
        self.is_leader = True
        await self.liveness.take_over()
        self._subscriptions = [
            await messaging.serve(self.bus, names.heartbeat_subject("*"), self._on_heartbeat),
            await messaging.serve(self.bus, names.WORKER_CHANGED_SUBJECT, self._on_worker_changed),
            await messaging.consume(
                self.bus, names.RUN_REQUESTS_STREAM, names.SCHEDULER_CONSUMER, self._on_run_requested
            ),
        ]
        self._leader_tasks = [
            asyncio.create_task(self._every(0, self._place_when_woken), name="scheduler-placement"),
            asyncio.create_task(self._every(LIVENESS_CHECK_S, self.liveness.check), name="scheduler-liveness"),
            asyncio.create_task(self._every(REASONS_EVERY_S, self._refresh_reasons), name="scheduler-reasons"),
        ]
        self.wake()

    async def _step_down(self) -> None:
        self.is_leader = False
        for subscription in self._subscriptions:
            await subscription.stop()
        for task in self._leader_tasks:
            task.cancel()
        for task in self._leader_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._subscriptions, self._leader_tasks = [], []

    @staticmethod
    async def _every(seconds: float, work: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await work()
            except GyozaError as exc:
                log.warning("scheduler step failed: %s", exc.message)
            except Exception:
                log.exception("scheduler step failed")
            if seconds:
                await asyncio.sleep(seconds)

    async def _on_heartbeat(self, subject: str, data: bytes) -> bytes:
        """``gyoza.workers.<id>.heartbeat``: the same body as POST /workers/{id}/heartbeat, the id from the subject.

        A NATS worker gets the API's error body for a bad heartbeat, as a REST worker gets a 400.
        """
        worker_id = subject.split(".")[2]
        try:
            body = HeartbeatIn.model_validate_json(data)
        except ValidationError as exc:
            error = InvalidRequest("invalid heartbeat", details=validation_problems(exc))
            return json.dumps(error.to_body()).encode()
        reply = await self.liveness.heartbeat(worker_id, body)
        return reply.model_dump_json().encode()

    async def _on_worker_changed(self, subject: str, data: bytes) -> bytes:
        await self.liveness.reload(data.decode())
        return b"{}"

    async def _on_run_requested(self, data: bytes) -> None:
        """A run (re)entered PENDING: make sure the model has it (the feed may lag), then place."""
        request = RunRequested.model_validate_json(data)
        known = self.state.queue.runs.get(request.run_id) or self.state.delayed.get(request.run_id, (0, None))[1]
        if known is None or known.attempt < request.attempt:
            try:
                record, revision = await self.runs.get_with_revision(request.run_id)
            except RunNotFound:
                return
            self.state.apply(record, revision)
        self.wake()

    # --- placement ---------------------------------------------------------------------------------------------

    async def _place_when_woken(self) -> None:
        next_due = self.state.promote_due(time.time())
        timeout = None if next_due is None else max(next_due - time.time(), 0.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()
        self.state.promote_due(time.time())
        await self._place_all()

    async def _place_all(self) -> None:
        """Place the best pending run on its best worker, again and again, until nothing more fits."""
        blocked: set[Demand] = set()
        # Forget the previous pass's blocked lanes now, not when this pass ends: a long pass (thousands of runs placed
        # after workers joined) must not have the reasons loop keep writing stale "why waiting" onto runs being placed.
        self._blocked = blocked
        workers = self.state.ledger.workers
        while True:
            best: QueuedRun | None = None
            for lane, run in self.state.queue.heads():
                if lane.demand not in blocked and (best is None or run.key < best.key):
                    best = run
            if best is None:
                break
            target = best_worker(best.demand, workers.values())
            if target is None:
                blocked.add(best.demand)
                continue
            worker, gpu_ids = target
            self.state.queue.pop(best)
            self.state.ledger.reserve(
                Held(best.run_id, best.attempt, worker.worker_id, best.demand, gpu_ids, RunState.ASSIGNED)
            )
            self.state.in_flight.add(best.run_id)
            await self._writes.acquire()
            self._spawn(self._assign(best, worker.worker_id, gpu_ids))

    async def _assign(self, run: QueuedRun, worker_id: str, gpu_ids: list[int]) -> None:
        try:
            record, revision = await self.runs.assign(run.run_id, run.attempt, worker_id, gpu_ids)
        except GyozaError as exc:
            # Cancelled, retried or reprioritised meanwhile (or NATS hiccup): drop our guess, reload the truth.
            log.info("assignment of %s skipped: %s", run.run_id, exc.message)
            self.state.in_flight.discard(run.run_id)
            self.state.ledger.release(run.run_id)
            self.state.revisions.pop(run.run_id, None)
            with contextlib.suppress(GyozaError):
                self.state.apply(*await self.runs.get_with_revision(run.run_id))
            self.wake()
            return
        finally:
            self._writes.release()
        self.state.in_flight.discard(run.run_id)
        self.state.apply(record, revision)
        await messaging.publish(
            self.bus, names.assignments_subject(worker_id), assignment(run_view(record)).model_dump_json().encode()
        )

    async def _send_cancel(self, held: Held) -> None:
        command = WorkerCommand(type="cancel", run_id=held.run_id, attempt=held.attempt)
        await messaging.publish(self.bus, names.assignments_subject(held.worker_id), command.model_dump_json().encode())

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- pending reasons ---------------------------------------------------------------------------------------

    async def _refresh_reasons(self) -> None:
        """Write why blocked runs wait (only where it changed, a bounded number per lane and round)."""
        workers = list(self.state.ledger.workers.values())
        for demand in list(self._blocked):
            reason = pending_reason(demand, workers)
            written = 0
            for run in list(self.state.queue.in_lane(demand)):
                if written >= REASON_WRITES_PER_LANE:
                    break
                if run.reason_code == reason.code:
                    continue  # the message is a snapshot ("the most free seen"); rewrite only when the code changes
                run.reason_code, run.reason_message = reason.code, reason.message
                await self.runs.set_pending_reason(run.run_id, run.attempt, reason)
                written += 1
