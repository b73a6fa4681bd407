"""On SIGTERM the agent gives back what it has not started, naming itself, and keeps what runs: it waits for
running ops (up to the drain timeout, then stops them and reports them lost), and a second signal stops at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gyoza.processes import Shutdown
from gyoza.schema import Assignment, Constraints, HeartbeatReply, PullCredential, WorkerEventIn, WorkerResources
from gyoza.worker.agent import WorkerAgent
from gyoza.worker.attempt import AttemptRunner
from gyoza.worker.iocontract import ExitStatus
from gyoza.worker.runtimes.base import LaunchSpec, LogCapture
from gyoza.worker.settings import WorkerSettings
from gyoza.worker.telemetry import UsageMeter
from tests.waiting import until


class RecordingClient:
    def __init__(self) -> None:
        self.events: list[tuple[str, WorkerEventIn]] = []

    async def post_event(self, run_id: str, event: WorkerEventIn) -> Any:
        self.events.append((run_id, event))


RESOURCES = WorkerResources(cpu=1, ram_mb=1024)


def assignment(run_id: str) -> Assignment:
    return Assignment(
        run_id=run_id, attempt=1, image="img", command=None, inputs={}, env={}, constraints=Constraints(),
        gpu_ids=[], timeout_seconds=None, op_definition=None, definition_version=None, output_specs=None,
    )  # fmt: skip


async def test_unstarted_attempts_are_given_back_and_running_ones_kept(tmp_path: Path) -> None:
    client = RecordingClient()
    settings = WorkerSettings(work_dir=tmp_path, name="w1", heartbeat_interval=1.0, stop_grace=1.0, log_limit=1024,
                              runtime="process")  # fmt: skip
    agent = WorkerAgent(settings, RESOURCES, client, runtime=None)  # type: ignore[arg-type]
    waiting = AttemptRunner(assignment("waiting"), settings, client, runtime=None)  # type: ignore[arg-type]
    running = AttemptRunner(assignment("running"), settings, client, runtime=None)  # type: ignore[arg-type]
    running.started = True
    agent.runners = {waiting.key: waiting, running.key: running}

    await agent._give_back_unstarted()

    assert [(run_id, e.type, e.worker_id) for run_id, e in client.events] == [("waiting", "UNASSIGNED", "w1")]
    assert waiting.cancel_requested.is_set() and not running.cancel_requested.is_set()


# --- the shutdown sequence, with a runtime whose ops end when told ------------------------------------------------


class Op:
    """A running op that exits when ``finish`` is called or when it is stopped."""

    def __init__(self) -> None:
        self.logs = LogCapture()
        self.meter = UsageMeter()
        self.exited = asyncio.Event()
        self.stopped = self.removed = self.abandoned = False

    def finish(self) -> None:
        self.exited.set()

    async def wait(self) -> ExitStatus:
        await self.exited.wait()
        return ExitStatus(143 if self.stopped else 0)

    async def stop(self, grace: float) -> None:
        self.stopped = True
        self.exited.set()

    async def remove(self) -> None:
        self.removed = True

    def abandon(self) -> bool:
        self.abandoned = True
        return True


class Runtime:
    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.launched = asyncio.Event()

    async def ensure_image(self, image: str, login: PullCredential | None = None) -> None:
        """Nothing to pull."""

    async def launch(self, spec: LaunchSpec, logs: LogCapture) -> Op:
        self.ops.append(Op())
        self.launched.set()
        return self.ops[-1]

    async def images(self) -> list[str]:
        return []

    async def orphans(self, worker_id: str, work_dir: Path) -> list[Any]:
        return []

    async def remove_instances(self, worker_id: str, instances_dir: Path) -> int:
        return 0


class Server(RecordingClient):
    async def heartbeat(self, worker_id: str, body: Any) -> HeartbeatReply:
        return HeartbeatReply(heartbeat_interval_s=0.05)

    async def claim(self, worker_id: str, wait: float = 0) -> Any:
        await asyncio.Event().wait()

    async def upload_logs(self, *args: Any) -> None:
        """Not looked at here."""


Started = tuple["Server", "Runtime", Shutdown, "asyncio.Task[None]"]


async def start_one(tmp_path: Path, drain_timeout: float | None) -> Started:
    server, runtime, shutdown = Server(), Runtime(), Shutdown()
    settings = WorkerSettings(work_dir=tmp_path, name="w1", heartbeat_interval=0.05, stop_grace=0.1, log_limit=1024,
                              runtime="process", drain_timeout=drain_timeout)  # fmt: skip
    agent = WorkerAgent(settings, RESOURCES, server, runtime)  # type: ignore[arg-type]

    async def source(agent: WorkerAgent) -> None:
        agent.accept(assignment("r1"))
        await asyncio.Event().wait()

    task = asyncio.create_task(agent.run(shutdown, source))
    await asyncio.wait_for(runtime.launched.wait(), 5)
    await until(lambda: [e for _, e in server.events if e.type == "STARTED"], 5)
    return server, runtime, shutdown, task


def final_events(server: Server) -> list[WorkerEventIn]:
    return [e for _, e in server.events if e.type in ("COMPLETED", "FAILED", "CANCELLED")]


async def test_a_drain_waits_for_the_running_op_and_reports_it(tmp_path: Path) -> None:
    server, runtime, shutdown, task = await start_one(tmp_path, drain_timeout=None)
    shutdown.escalate()
    await asyncio.sleep(0.1)
    assert not task.done(), "the worker waits for its running op"
    runtime.ops[0].finish()
    await asyncio.wait_for(task, 5)
    assert [e.type for e in final_events(server)] == ["COMPLETED"]
    assert runtime.ops[0].removed


async def test_when_the_drain_timeout_expires_the_op_is_stopped_and_reported_lost(tmp_path: Path) -> None:
    server, runtime, shutdown, task = await start_one(tmp_path, drain_timeout=0.2)
    shutdown.escalate()
    await asyncio.wait_for(task, 5)
    [failed] = final_events(server)
    assert failed.payload["reason"] == "WORKER_LOST", "lost with its worker: retried by the policy"
    assert "drain timeout of 0.2 s expired" in failed.payload["error"]
    assert runtime.ops[0].stopped and runtime.ops[0].removed


async def test_a_second_signal_stops_at_once_and_leaves_the_op_for_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server, runtime, shutdown, task = await start_one(tmp_path, drain_timeout=None)
    shutdown.escalate()
    shutdown.escalate()
    await asyncio.wait_for(task, 5)
    op = runtime.ops[0]
    assert op.abandoned and not (op.stopped or op.removed)
    assert final_events(server) == [], "nothing is reported for an abandoned attempt"
    assert "run r1 attempt 1: RUNNING on the server; its container keeps running" in caplog.text
    assert (tmp_path / "r1-1").exists(), "its directory stays for the adoption"
