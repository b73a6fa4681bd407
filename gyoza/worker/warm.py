"""Warm instances on this worker (docs/ops.md, "Warm instances"): an op's container kept up between the runs of its
definition version, serving them one at a time through the serve loop of ``gyoza.op._contract``.

A run of a definition with ``keep_warm_seconds`` goes to an idle instance of its version with the same GPUs, env and
limits when there is one (a warm hit: no container start, no setup), else to a new instance started for it. The
attempt is an ``Execution`` like a cold one's (``WarmAttempt``), so the runner reports, fences, cancels and times it
out the same way; only its ending differs:

- the op wrote ``done.json``: the attempt's outcome is read from its directory as for a cold exit, and the instance
  goes back to the pool, idle, *before* the outcome is reported (the scheduler may place the next run at once);
- the container ended first (a crash, an OOM kill, a setup that failed): the attempt fails with the exit and the
  instance is gone — only that attempt fails;
- cancel, timeout, or a refused report stop the whole instance, as they stop a cold container.

Idle instances hold no reservation on the server: a run that needs their GPUs or RAM stops them at once
(``make_room``), so warmth never blocks capacity. An idle instance also ends after ``keep_warm_seconds``, and beyond
``max_instances`` idle ones of a definition here. Instances never outlive the worker: a later life removes any it
finds, and the attempts they ran are failed ``WORKER_LOST`` by the server and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gyoza.op._contract import ATTEMPT_FILE, ATTEMPTS_DIR, DONE_FILE, ERROR_FILE, IO_DIR_VAR, NEXT_FILE, attempt_env
from gyoza.schema import Assignment, WarmInstance, WorkerResources
from gyoza.worker.iocontract import AttemptDir, ExitStatus
from gyoza.worker.launch import instance_spec
from gyoza.worker.runtimes.base import Execution, LogCapture, Runtime
from gyoza.worker.settings import WorkerSettings
from gyoza.worker.telemetry import UsageMeter

log = logging.getLogger(__name__)

INSTANCES_DIR_NAME = "instances"
DONE_POLL_S = 0.002
# An idle instance is stopped quickly: it runs nothing, and what waits for its room should not wait long.
RETIRE_GRACE_S = 2.0
IDLE_LOG_LIMIT = 64 * 1024  # what an idle instance prints between attempts is kept nowhere


def serves(a: Assignment) -> bool:
    """Whether ``a`` runs on a warm instance (its definition keeps them)."""
    return bool(a.keep_warm_seconds) and a.op_definition is not None and a.definition_version is not None


def instance_key(a: Assignment) -> str:
    """What an instance must share with an attempt to serve it: version, image, command, GPUs, limits, env."""
    fixed = {
        "definition": a.op_definition, "version": a.definition_version, "image": a.image, "command": a.command,
        "gpu_ids": sorted(a.gpu_ids), "cpu": a.constraints.cpu, "ram_mb": a.constraints.ram_mb,
        "env": a.env, "secret_env": a.secret_env,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()


@dataclass(eq=False)
class Instance:
    id: str
    key: str
    assignment: Assignment  # the one it was started for: its definition, GPUs and limits
    dir: Path
    execution: Execution
    exited: asyncio.Future[ExitStatus]
    current: WarmAttempt | None = None
    idle_since: float = 0.0
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)
    retired: asyncio.Future[None] | None = field(default=None, repr=False)  # its removal, once begun

    def report(self) -> WarmInstance:
        a = self.assignment
        return WarmInstance(
            id=self.id, definition=a.op_definition or "", version=a.definition_version or "", gpu_ids=list(a.gpu_ids),
            vram_mb=a.constraints.vram_mb, busy=self.current is not None,
        )  # fmt: skip


class WarmAttempt:
    """One attempt on an instance, as the runner sees an execution."""

    def __init__(
        self, pool: InstancePool, instance: Instance, directory: AttemptDir, logs: LogCapture, meter: UsageMeter,
        since: float | None,
    ) -> None:  # fmt: skip
        self.pool, self.instance, self.dir = pool, instance, directory
        self.logs, self.meter = logs, meter
        self.since = since  # when it was handed over (None: the instance was started for it, setup and all)

    @property
    def on_instance(self) -> bool:
        return self.instance.current is self

    async def wait(self) -> ExitStatus:
        done = asyncio.create_task(self._done())
        either: set[asyncio.Future[Any]] = {done, self.instance.exited}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
        if done.done() and not done.cancelled() and self.on_instance:
            code = done.result()
            await self.instance.execution.read_back(self.since)
            self.pool.release(self.instance)
            return ExitStatus(exit_code=code)
        status = await self.instance.exited
        self.pool.discard(self.instance)
        if (self.instance.dir / NEXT_FILE).exists():  # it ended without taking the attempt
            return ExitStatus(self._untaken(status.exit_code), status.oom_killed)
        return status

    async def _done(self) -> int:
        path = self.dir.path / DONE_FILE
        while True:
            try:
                code = json.loads(path.read_text()).get("exit_code", 1)
                return code if isinstance(code, int) and not isinstance(code, bool) else 1
            except (FileNotFoundError, ValueError, AttributeError):
                await asyncio.sleep(DONE_POLL_S)

    def _untaken(self, exit_code: int) -> int:
        """Explain an instance that ended before it took its attempt (unless the op said why itself)."""
        error = self.dir.path / ERROR_FILE
        if not error.exists():
            message = (
                f"the op's container exited (code {exit_code}) before taking the attempt: a definition with "
                "keep_warm_seconds needs an op that serves attempts (GYOZA_SERVE=1), as the Python op SDK does"
            )
            error.write_text(json.dumps({"message": message, "type": "WarmInstanceError"}))
        return exit_code or 1

    async def read_back(self, since: float | None) -> None:
        """Done by ``wait`` already (the instance's record from the hand-over on)."""

    async def stop(self, grace: float) -> None:
        """Cancel, timeout or a refused report: stop the whole instance, as a cold container is stopped."""
        if self.on_instance:
            self.pool.discard(self.instance)
            await self.instance.execution.stop(grace)

    async def remove(self) -> None:
        if self.on_instance:  # not given back: the instance ended with the attempt, or was stopped for it
            await self.pool.retire(self.instance)

    def abandon(self) -> bool:
        """The worker stops at once: instances do not outlive it (``InstancePool.close`` ends them)."""
        self.pool.discard(self.instance)
        return False


class InstancePool:
    def __init__(
        self, settings: WorkerSettings, runtime: Runtime, resources: WorkerResources,
        holding: Callable[[], Iterable[Assignment]], on_change: Callable[[], None],
    ) -> None:  # fmt: skip
        self.settings, self.runtime, self.resources = settings, runtime, resources
        self.holding = holding  # what the worker's attempts hold now (cold ones and warm ones)
        self.on_change = on_change  # the instance set changed: tell the server soon
        self.dir = settings.work_dir.parent / INSTANCES_DIR_NAME
        self.instances: dict[str, Instance] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        removed = await self.runtime.remove_instances(self.settings.name, self.dir)
        if removed:
            log.info("removed %d warm instance(s) left by a previous life of this worker", removed)
        shutil.rmtree(self.dir, ignore_errors=True)

    def report(self) -> list[WarmInstance]:
        return [instance.report() for instance in self.instances.values()]

    # --- taking an attempt -------------------------------------------------------------------------------------

    async def take(self, a: Assignment, logs: LogCapture) -> WarmAttempt:
        """Hand ``a`` to an idle instance that fits it, else to a new one (``ImageMissing``/``LaunchFailed`` as for
        a cold launch)."""
        key = instance_key(a)
        idle = [i for i in self.instances.values() if i.key == key and i.current is None and not i.exited.done()]
        if idle:
            instance = max(idle, key=lambda i: i.idle_since)  # the most recently used: the others may expire
            if instance.expiry is not None:
                instance.expiry.cancel()
            since = time.time()
            directory = _prepare(instance.dir, a)
            attempt = WarmAttempt(self, instance, directory, logs, UsageMeter(), since)
            instance.current = attempt
            execution = instance.execution
            execution.logs, execution.meter, execution.since = logs, attempt.meter, since
            _point(instance.dir, directory)  # last: the op takes the attempt only once it is complete
            return attempt
        return await self._start(a, key, logs)

    async def _start(self, a: Assignment, key: str, logs: LogCapture) -> WarmAttempt:
        await self.make_room(a)
        instance_id = uuid.uuid4().hex[:16]
        instance_dir = self.dir / instance_id
        (instance_dir / ATTEMPTS_DIR).mkdir(parents=True)
        for made in (instance_dir, instance_dir / ATTEMPTS_DIR):
            made.chmod(0o777)  # the op may run as any user inside its container
        directory = _prepare(instance_dir, a)
        _point(instance_dir, directory)  # taken once the op's setup is done
        try:
            execution = await self.runtime.launch(instance_spec(a, self.settings, instance_dir, instance_id), logs)
        except BaseException:
            shutil.rmtree(instance_dir, ignore_errors=True)
            raise
        instance = Instance(instance_id, key, a, instance_dir, execution, asyncio.ensure_future(execution.wait()))
        attempt = WarmAttempt(self, instance, directory, logs, execution.meter, since=None)
        instance.current = attempt
        instance.exited.add_done_callback(lambda _: self._ended(instance))
        self.instances[instance_id] = instance
        log.info("started warm instance %s of %s %s for run %s", instance_id, a.op_definition, a.definition_version,
                 a.run_id)  # fmt: skip
        self.on_change()
        return attempt

    # --- giving instances back and ending them -------------------------------------------------------------------

    def release(self, instance: Instance) -> None:
        """The attempt on ``instance`` ended well: idle from now, until its keep-warm time runs out."""
        instance.current = None
        instance.execution.logs = LogCapture(IDLE_LOG_LIMIT)
        instance.execution.meter = UsageMeter()
        instance.idle_since = time.monotonic()
        a = instance.assignment
        keep = a.keep_warm_seconds or 0.0
        instance.expiry = asyncio.get_running_loop().call_later(keep, self._expire, instance)
        idle = [i for i in self.instances.values() if i.current is None]
        same = sorted((i for i in idle if i.assignment.op_definition == a.op_definition), key=lambda i: i.idle_since)
        for extra in same[: max(len(same) - (a.max_instances or len(same)), 0)]:
            self._retire_soon(extra, "more idle instances than max_instances")

    def _ended(self, instance: Instance) -> None:
        """The container ended: an attempt on it finds out itself; an idle one is cleaned up."""
        if instance.current is None:
            self._retire_soon(instance, "its container ended while idle")

    def _expire(self, instance: Instance) -> None:
        if instance.current is None and instance.id in self.instances:
            self._retire_soon(instance, f"idle for keep_warm_seconds={instance.assignment.keep_warm_seconds:g}")

    def discard(self, instance: Instance) -> None:
        """No attempt may go to ``instance`` any more (it is being stopped, or it ended)."""
        if self.instances.pop(instance.id, None) is not None:
            if instance.expiry is not None:
                instance.expiry.cancel()
            self.on_change()

    def _retire_soon(self, instance: Instance, why: str) -> None:
        log.info("stopping warm instance %s of %s: %s", instance.id, instance.assignment.op_definition, why)
        self.discard(instance)
        task = asyncio.ensure_future(self.retire(instance))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def retire(self, instance: Instance) -> None:
        """Stop (if it still runs) and remove an instance that serves nobody any more; once, however many ask."""
        self.discard(instance)
        if instance.retired is None:
            instance.retired = asyncio.ensure_future(self._retire(instance))
        await asyncio.shield(instance.retired)

    @staticmethod
    async def _retire(instance: Instance) -> None:
        try:
            if not instance.exited.done():
                await instance.execution.stop(RETIRE_GRACE_S)
                with contextlib.suppress(Exception):
                    await instance.exited
            await instance.execution.remove()
        except Exception as exc:  # the engine's trouble must not fail the attempt that waits for the room
            log.warning("removing warm instance %s failed: %s", instance.id, exc)
        shutil.rmtree(instance.dir, ignore_errors=True)

    async def make_room(self, a: Assignment) -> None:
        """Stop idle instances in the way of ``a``: any holding one of its GPUs, then the longest idle while the
        RAM of what runs here, the idle instances and ``a`` together is more than the worker has."""
        idle = sorted((i for i in self.instances.values() if i.current is None), key=lambda i: i.idle_since)
        in_the_way = [i for i in idle if set(i.assignment.gpu_ids) & set(a.gpu_ids)]
        held = sum(h.constraints.ram_mb for h in self.holding() if h.run_id != a.run_id) + a.constraints.ram_mb
        rest = [i for i in idle if i not in in_the_way]
        while rest and held + sum(i.assignment.constraints.ram_mb for i in rest) > self.resources.ram_mb:
            in_the_way.append(rest.pop(0))
        for instance in in_the_way:
            log.info("stopping idle warm instance %s of %s: run %s needs its room", instance.id,
                     instance.assignment.op_definition, a.run_id)  # fmt: skip
        await asyncio.gather(*(self.retire(instance) for instance in in_the_way))

    async def close(self) -> None:
        """The worker stops: end every instance (idle ones after a grace, the rest at once)."""
        instances = list(self.instances.values())
        await asyncio.gather(*(self.retire(instance) for instance in instances), *self._retiring)


def _prepare(instance_dir: Path, a: Assignment) -> AttemptDir:
    """The attempt's directory in the instance's: its inputs, and its variables for the op to set."""
    directory = AttemptDir(instance_dir / ATTEMPTS_DIR, a.run_id, a.attempt)
    directory.prepare(a.inputs)
    variables = attempt_env(a.run_id, a.attempt, a.op_definition or "", a.definition_version or "", a.gpu_ids, "")
    del variables[IO_DIR_VAR]  # the op sets it to the attempt's directory
    (directory.path / ATTEMPT_FILE).write_text(json.dumps(variables))
    return directory


def _point(instance_dir: Path, directory: AttemptDir) -> None:
    """Tell the instance which attempt is next (written whole: the op reads the name or nothing)."""
    pointer = instance_dir / NEXT_FILE
    temporary = pointer.with_name(f".{NEXT_FILE}.tmp")
    temporary.write_text(directory.path.name)
    temporary.replace(pointer)
