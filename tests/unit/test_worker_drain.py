"""On SIGTERM the agent gives back what it has not started, naming itself, and keeps what runs."""

from pathlib import Path
from typing import Any

from gyoza.schema import Assignment, Constraints, WorkerEventIn, WorkerResources
from gyoza.worker.agent import AgentSettings, WorkerAgent
from gyoza.worker.attempt import AttemptRunner, AttemptSettings


class RecordingClient:
    def __init__(self) -> None:
        self.events: list[tuple[str, WorkerEventIn]] = []

    async def post_event(self, run_id: str, event: WorkerEventIn) -> Any:
        self.events.append((run_id, event))


def assignment(run_id: str) -> Assignment:
    return Assignment(
        run_id=run_id, attempt=1, image="img", command=None, inputs={}, env={}, constraints=Constraints(),
        gpu_ids=[], timeout_seconds=None, op_definition=None, definition_version=None, output_specs=None,
    )  # fmt: skip


async def test_unstarted_attempts_are_given_back_and_running_ones_kept(tmp_path: Path) -> None:
    client = RecordingClient()
    settings = AgentSettings("w1", [], WorkerResources(cpu=1, ram_mb=1024), 1.0, None)
    attempts = AttemptSettings("w1", tmp_path, 1.0, 1024, None)
    agent = WorkerAgent(settings, attempts, client, runtime=None)  # type: ignore[arg-type]
    waiting = AttemptRunner(assignment("waiting"), attempts, client, runtime=None)  # type: ignore[arg-type]
    running = AttemptRunner(assignment("running"), attempts, client, runtime=None)  # type: ignore[arg-type]
    running.started = True
    agent.runners = {waiting.key: waiting, running.key: running}

    await agent._give_back_unstarted()

    assert [(run_id, e.type, e.worker_id) for run_id, e in client.events] == [("waiting", "UNASSIGNED", "w1")]
    assert waiting.cancel_requested.is_set() and not running.cancel_requested.is_set()
