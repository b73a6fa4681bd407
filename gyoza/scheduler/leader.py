"""The scheduler: keeps the cluster model on every replica, and in the lease holder places runs on workers.

While leader it consumes ``gyoza.runs.requested`` (durable consumer ``scheduler``) and answers heartbeats on
``gyoza.workers.<id>.heartbeat``; a placement loop puts the best pending runs on the workers they fit (SPEC §5.2-5.3),
a liveness loop evicts silent workers, and a reasons loop keeps every waiting run's ``state_reason`` honest.

It acts (places, evicts, answers heartbeats, writes) only while ``is_leader``: it leads and renewed its lease recently
enough (``Lease.fresh``), checked before every such write. A lease that is lost, cannot be renewed in time, or whose
task fails in any way ends the leadership at once. Every loop runs supervised: restarted, logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from gyoza.bus import names
from gyoza.bus.port import Bus, Stoppable
from gyoza.core.placement import Demand, pending_reason
from gyoza.errors import GyozaError, InvalidRequest, RunNotFound, Unavailable
from gyoza.scheduler.admission import Admission, QuotaOf
from gyoza.scheduler.lease import Lease
from gyoza.scheduler.ledger import Held
from gyoza.scheduler.liveness import Liveness
from gyoza.scheduler.queue import QueuedRun
from gyoza.scheduler.state import ClusterState, Known
from gyoza.schema import (
    HeartbeatIn,
    HeartbeatReply,
    RunRecord,
    RunRequested,
    RunState,
    validation_problems,
)
from gyoza.services.clock import SYSTEM_CLOCK, Clock
from gyoza.services.fleet import HeartbeatBodies
from gyoza.services.runs import RunService
from gyoza.services.topics import TopicFeed
from gyoza.services.workers import WorkerService
from gyoza.settings import Settings
from gyoza.supervision import Background, TaskFailures, stop_task, stop_tasks, supervised

log = logging.getLogger(__name__)

MAX_WRITES_IN_FLIGHT = 128
REASONS_EVERY_S = 1.0
REASON_WRITES_PER_LANE = 200
REASON_CHECKS_PER_YIELD = 1000
# After an assignment write NATS could not take, placement tries again this much later rather than at once.
RETRY_UNAVAILABLE_S = 0.5
LEASE_TASK = "scheduler-lease"

Placement = tuple[QueuedRun, str, list[int], Known | None]


class Scheduler:
    def __init__(
        self, bus: Bus, runs: RunService, workers: WorkerService, settings: Settings, node_id: str,
        failures: TaskFailures, clock: Clock = SYSTEM_CLOCK, outbox: TopicFeed | None = None,
        catch_up: Callable[[], Awaitable[None]] | None = None,
        quota_of: QuotaOf | None = None,
    ) -> None:  # fmt: skip
        """``catch_up``: returns once this process's run feed has what the runs bucket held when it was called (a
        new leader waits for it, so that it counts every place the previous one handed out)."""
        self._catch_up = catch_up
        self.clock = clock
        self.outbox = outbox
        self.bus = bus
        self.runs = runs
        self.failures = failures
        self.state = ClusterState(clock)
        self.admission = Admission(self.state.ledger, quota_of)
        self.lease = Lease(bus, node_id, settings.lease_ttl, clock, outbox)
        self.lease_ttl = settings.lease_ttl
        self.heartbeat_interval = settings.heartbeat_interval
        self.liveness = Liveness(
            self.state, runs, workers, settings.heartbeat_interval, settings.worker_timeout, self.wake,
            lambda: self.is_leader, failures, clock,
        )  # fmt: skip
        self.heartbeat_bodies = HeartbeatBodies()
        self._idle_reply = HeartbeatReply(heartbeat_interval_s=self.heartbeat_interval).model_dump_json().encode()
        self._leading = False
        self._lease_trouble = False  # a lease check failed and was logged; the next failures are not
        self._wake = asyncio.Event()
        self._writes = asyncio.Semaphore(MAX_WRITES_IN_FLIGHT)
        self._blocked: set[Demand] = set()
        self._lease_task: asyncio.Task[None] | None = None
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._subscriptions: list[Stoppable] = []
        self._assignments = Background("scheduler-assign", failures)

    @property
    def is_leader(self) -> bool:
        """Acting as the scheduler right now: leading, with the lease renewed within its acting time (no I/O)."""
        return self._leading and self.lease.fresh()

    # --- every replica -----------------------------------------------------------------------------------------

    async def on_run(self, record: RunRecord, revision: int) -> None:
        """Run feed listener: keep the model current (the service that wrote a cancel request told the worker)."""
        self.state.apply(record, revision)
        if self.is_leader:
            self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        """Try for the lease once right away (a lone server is leader before it answers), then keep at it."""
        try:
            await self._try_to_lead()
        except Exception:
            await self._step_down()
            self.failures.record(LEASE_TASK)
            log.exception("scheduler lease check failed")
        self._lease_task = asyncio.create_task(
            supervised(LEASE_TASK, self._hold_lease, self.failures), name="scheduler-lease"
        )

    async def stop(self) -> None:
        await stop_task(self._lease_task)
        if self._leading:
            await self._step_down()
            await self.lease.release()
        await self._assignments.cancel()
        await self.liveness.stop()

    # --- the lease ---------------------------------------------------------------------------------------------

    async def _hold_lease(self) -> None:
        """Renew while leading, else try to take the lease. Any failure here ends the leadership at once; the
        supervisor restarts this loop (as a standby)."""
        try:
            while True:
                await asyncio.sleep(self._lease_pause())
                if self._leading:
                    await self._renew()
                else:
                    await self._try_to_lead()
        except Exception:
            await self._step_down()
            raise

    def _lease_pause(self) -> float:
        if not self._leading:
            return self.lease_ttl / 5
        # Renew early; after a failed renewal, retry soon, for as long as the lease is still fresh.
        return min(self.lease_ttl / (10 if self._lease_trouble else 3), self.lease.remaining())

    async def _renew(self) -> None:
        try:
            async with asyncio.timeout(self.lease.remaining()):  # no use waiting once the lease is stale
                kept = await self.lease.renew()
        except (GyozaError, TimeoutError) as exc:
            self._note_lease_trouble(f"scheduler lease renewal failed: {_describe(exc)}")
            kept = True  # still ours as far as anyone knows: act on while it is fresh
        else:
            self._lease_trouble = False
        if not kept:
            log.warning("scheduler lease taken by another server; standing by")
            await self._step_down()
        elif not self.lease.fresh():
            log.warning("scheduler lease not renewed within %.1f s; standing by", self.lease.acting_s)
            await self._step_down()

    async def _try_to_lead(self) -> None:
        try:
            if await self.lease.acquire():
                await self._lead()
            self._lease_trouble = False
        except GyozaError as exc:
            self._note_lease_trouble(f"scheduler lease check failed: {exc.message}")
            await self._step_down()

    def _note_lease_trouble(self, message: str) -> None:
        if not self._lease_trouble:
            log.warning("%s", message)
        self._lease_trouble = True

    # --- leader only -------------------------------------------------------------------------------------------

    async def _lead(self) -> None:
        log.info("this server is now the scheduler leader")
        if self._catch_up is not None:
            await self._catch_up()  # the previous leader's last assignments: concurrency limits count them
        self._leading = True
        await self.liveness.take_over()
        if self.outbox is not None:
            await self.outbox.take_over(self.lease.observed.outbox_through if self.lease.observed else 0,
                                        self.lease.observed_written_at())  # fmt: skip
        # One at a time, each kept as soon as it runs: a step-down after a failure half-way stops those started.
        self._subscriptions.append(await self.bus.serve(names.heartbeat_subject("*"), self._on_heartbeat))
        self._subscriptions.append(await self.bus.serve(names.WORKER_CHANGED_SUBJECT, self._on_worker_changed))
        self._subscriptions.append(
            await self.bus.consume(names.RUN_REQUESTS_STREAM, names.SCHEDULER_CONSUMER, self._on_run_requested)
        )
        self._leader_tasks = [
            asyncio.create_task(supervised(name, loop, self.failures), name=name)
            for name, loop in (
                ("scheduler-placement", self._place_forever),
                ("scheduler-liveness", self.liveness.watch),
                ("scheduler-reasons", self._refresh_reasons_forever),
            )
        ]
        self.wake()

    async def _step_down(self) -> None:
        """Stop acting at once, then stop listening and end the leader's loops."""
        self._leading = False
        self.lease.forget()
        if self.outbox is not None:
            self.outbox.step_down()
        subscriptions, tasks = self._subscriptions, self._leader_tasks
        self._subscriptions, self._leader_tasks = [], []
        for subscription in subscriptions:
            await subscription.stop()
        await stop_tasks(tasks)

    async def heartbeat(self, worker_id: str, body: HeartbeatIn, arrived: float) -> bytes:
        """Answer a worker's heartbeat (from NATS, or this server's own REST route) with the reply's JSON.

        ``arrived`` is the monotonic time the heartbeat reached this process: liveness counts from it.
        """
        if not self.is_leader:
            raise Unavailable("this server is not the scheduler leader right now; retry shortly")
        commands = await self.liveness.heartbeat(worker_id, body, arrived)
        if not commands:
            return self._idle_reply
        reply = HeartbeatReply(commands=commands, heartbeat_interval_s=self.heartbeat_interval)
        return reply.model_dump_json().encode()

    async def _on_heartbeat(self, subject: str, data: bytes) -> bytes:
        """``gyoza.workers.<id>.heartbeat``: the same body as POST /workers/{id}/heartbeat, the id from the subject.

        A refusal is raised: the requester (a server's REST route, or a NATS worker reading the error body) gets the
        same error as a REST worker would, 400 for a bad heartbeat, 503 when this server stopped acting as leader.
        """
        arrived = self.clock.monotonic()
        worker_id = subject.split(".")[2]
        try:
            body = self.heartbeat_bodies.parse(worker_id, data)
        except ValidationError as exc:
            raise InvalidRequest("invalid heartbeat", details=validation_problems(exc)) from None
        return await self.heartbeat(worker_id, body, arrived)

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

    async def _place_forever(self) -> None:
        while True:
            await self._place_when_woken()

    async def _place_when_woken(self) -> None:
        next_due = self.state.promote_due(self.clock.time())
        timeout = None if next_due is None else max(next_due - self.clock.time(), 0.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()
        self.state.promote_due(self.clock.time())
        await self._place_all()

    async def _place_all(self) -> None:
        """Place the best pending run on its best worker, again and again, until nothing more fits."""
        blocked: set[Demand] = set()
        # Forget the previous pass's blocked lanes now, not when this pass ends: a long pass (thousands of runs placed
        # after workers joined) must not have the reasons loop keep writing stale "why waiting" onto runs being placed.
        self._blocked = blocked
        while self.is_leader:
            # A write slot first, then choose and reserve without awaiting: a cancelled pass never leaves a run
            # taken out of the queue without its assignment task.
            await self._writes.acquire()
            placement = self._next_placement(blocked)
            if placement is None:
                self._writes.release()
                break
            self._assignments.spawn(self._assign(*placement))

    def _next_placement(self, blocked: set[Demand]) -> Placement | None:
        """Take the best pending run that fits a worker out of the queue and reserve it there."""
        while True:
            best: QueuedRun | None = None
            best_key: tuple[float, ...] = ()
            for lane, run in self.state.queue.heads():
                if lane.demand in blocked:
                    continue
                key = self.admission.order(run)
                if best is None or key < best_key:
                    best, best_key = run, key
            if best is None:
                return None
            if (best.demand.limits or best.demand.owner) and self.admission.held_back(best.demand) is not None:
                blocked.add(best.demand)  # the lane waits for one of its group's (or its key's) runs to end
                continue
            target = self.state.ledger.best_worker(best.demand)
            if target is None:
                blocked.add(best.demand)
                continue
            worker, gpu_ids = target
            self.state.queue.pop(best)
            self.state.ledger.reserve(
                Held(best.run_id, best.attempt, worker.worker_id, best.demand, gpu_ids, RunState.ASSIGNED)
            )
            self.state.in_flight.add(best.run_id)
            return best, worker.worker_id, gpu_ids, self.state.records.pop(best.run_id, None)

    async def _assign(self, run: QueuedRun, worker_id: str, gpu_ids: list[int], known: Known | None) -> None:
        try:
            if not self.is_leader:
                raise Unavailable("not acting as scheduler leader any more")
            record, revision = await self.runs.assign(run.run_id, run.attempt, worker_id, gpu_ids, known)
        except Exception as exc:
            await self._assignment_failed(run, exc)
            return
        finally:
            self._writes.release()
        self.state.landed(run.run_id, (record, revision))

    async def _assignment_failed(self, run: QueuedRun, exc: Exception) -> None:
        """Cancelled, retried or reprioritised meanwhile, NATS away, or no longer leader: drop our guess, put the
        run back in the queue and reload the truth. An unexpected error is re-raised (logged and counted)."""
        self.state.landed(run.run_id, None)  # what came meanwhile is applied, then superseded by the read below
        self.state.ledger.release(run.run_id)
        self.state.revisions.pop(run.run_id, None)
        # Read before queueing it again: queued first, a run cancelled meanwhile could be taken again while the read
        # is out, fail again, and so on without end.
        try:
            record, revision = await self.runs.get_with_revision(run.run_id)
        except RunNotFound:
            self.state.queue.remove(run.run_id)
        except GyozaError:
            self.state.requeue(run)  # NATS away: it waits again, and the next try checks it by compare-and-set
        except BaseException:
            self.state.requeue(run)
            raise
        else:
            self.state.apply(record, revision)
        if not isinstance(exc, GyozaError):
            self.wake()
            raise exc
        log.info("assignment of %s skipped: %s", run.run_id, exc.message)
        if isinstance(exc, Unavailable):
            asyncio.get_running_loop().call_later(RETRY_UNAVAILABLE_S, self.wake)
        else:
            self.wake()

    # --- pending reasons ---------------------------------------------------------------------------------------

    async def _refresh_reasons_forever(self) -> None:
        while True:
            if self.outbox is not None:
                await self.outbox.flush()  # topic events NATS could not take when they came
            await self._refresh_reasons()
            if self._blocked:
                self.wake()  # a quota raised, a limit lifted: nothing else would tell placement
            await asyncio.sleep(REASONS_EVERY_S)

    async def _refresh_reasons(self) -> None:
        """Write why blocked runs wait (only where it changed, a bounded number per lane and round).

        A lane can hold 100,000 runs: it is walked in place, not copied, yielding now and then, and the walk ends
        as soon as a placement pass finds the lane unblocked (its runs are being placed: no reason to write)."""
        workers = list(self.state.ledger.workers.values())
        for demand in list(self._blocked):
            reason = self.admission.held_back(demand) or pending_reason(demand, workers)
            written = 0
            for checked, run in enumerate(self.state.queue.in_lane(demand), 1):
                if written >= REASON_WRITES_PER_LANE or not self.is_leader or demand not in self._blocked:
                    break
                if checked % REASON_CHECKS_PER_YIELD == 0:
                    await asyncio.sleep(0)
                if run.reason_code == reason.code:
                    continue  # the message is a snapshot ("the most free seen"); rewrite only when the code changes
                run.reason_code, run.reason_message = reason.code, reason.message
                await self.runs.set_pending_reason(run.run_id, run.attempt, reason)
                written += 1


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, GyozaError) else f"no answer within the lease's acting time ({exc!r})"
