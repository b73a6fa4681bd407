"""How an attempt reports (below the HTTP boundary, with a recording client): outputs too large for a report fail
the attempt at once with OUTPUT_TOO_LARGE; a 4xx is never retried; retrying an unanswered report is bounded in time;
a final report that never landed leaves the container for the worker's next start to adopt."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gyoza.errors import GyozaError, InvalidRequest, PayloadTooLarge, Unavailable
from gyoza.schema import Assignment, Constraints, WorkerEventIn
from gyoza.worker import attempt as attempt_module
from gyoza.worker.attempt import MAX_REPORT_BYTES, AttemptRunner
from gyoza.worker.iocontract import ExitStatus, Outcome
from gyoza.worker.runtimes.base import LogCapture
from gyoza.worker.settings import WorkerSettings
from gyoza.worker.telemetry import UsageMeter


class Client:
    """Answers each post_event with the next of ``answers`` (an exception is raised; None is a 200)."""

    def __init__(self, *answers: GyozaError | None) -> None:
        self.answers = list(answers)
        self.events: list[WorkerEventIn] = []

    async def post_event(self, run_id: str, event: WorkerEventIn) -> Any:
        self.events.append(event)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer is not None:
            raise answer

    async def upload_logs(self, run_id: str, attempt: int, text: bytes, worker_id: str) -> None:
        """Logs are not what these tests look at."""


class Execution:
    """An op that has already exited with ``exit_code``."""

    def __init__(self, exit_code: int = 0) -> None:
        self.logs = LogCapture()
        self.meter = UsageMeter()
        self.exit_code = exit_code
        self.removed = self.abandoned = False

    async def wait(self) -> ExitStatus:
        return ExitStatus(self.exit_code)

    async def stop(self, grace: float) -> None:
        """It has exited already."""

    async def remove(self) -> None:
        self.removed = True

    def abandon(self) -> bool:
        self.abandoned = True
        return True


def runner(tmp_path: Path, client: Client) -> AttemptRunner:
    assignment = Assignment(
        run_id="r1", attempt=1, image="img", command=None, inputs={}, env={}, constraints=Constraints(),
        gpu_ids=[], timeout_seconds=None, op_definition=None, definition_version=None, output_specs=None,
    )  # fmt: skip
    settings = WorkerSettings(work_dir=tmp_path, name="w1", stop_grace=0.1, log_limit=1024, runtime="process")
    made = AttemptRunner(assignment, settings, client, runtime=None)  # type: ignore[arg-type]
    made.dir.prepare({})
    return made


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attempt_module, "REPORT_RETRY_FIRST_S", 0.01)
    monkeypatch.setattr(attempt_module, "REPORT_RETRY_MAX_S", 0.02)
    monkeypatch.setattr(attempt_module, "REPORT_DEADLINE_S", 0.3)


async def test_outputs_over_the_report_limit_fail_the_attempt_without_being_sent(tmp_path: Path) -> None:
    client = Client(None)
    made = runner(tmp_path, client)
    big = {"blob": "x" * (MAX_REPORT_BYTES + 10)}
    await made._report_outcome(Outcome("COMPLETED", outputs=big, exit_code=0))
    [event] = client.events
    assert (event.type, event.payload["reason"]) == ("FAILED", "OUTPUT_TOO_LARGE")
    size = len('{"blob":""}') + MAX_REPORT_BYTES + 10
    assert f"the outputs are {size:,} bytes as JSON, over the limit of 1,048,576 bytes" in str(event.msg)
    assert made.settled


@pytest.mark.parametrize(
    ("refusal", "reason"), [(PayloadTooLarge("body too large"), "OUTPUT_TOO_LARGE"),
                            (InvalidRequest("bad outputs"), "OUTPUT_INVALID")],
)  # fmt: skip
async def test_a_completion_the_server_refuses_becomes_a_failure_saying_why_never_a_retry(
    tmp_path: Path, refusal: GyozaError, reason: str
) -> None:
    client = Client(refusal, None)
    await runner(tmp_path, client)._report_outcome(Outcome("COMPLETED", outputs={"a": 1}, exit_code=0))
    assert [e.type for e in client.events] == ["COMPLETED", "FAILED"], "the refused COMPLETED was sent once"
    assert client.events[1].payload["reason"] == reason
    assert refusal.message in client.events[1].payload["error"]


async def test_a_4xx_is_sent_once_and_an_unanswered_report_is_given_up_in_bounded_time(tmp_path: Path) -> None:
    rejected = Client(PayloadTooLarge("too large"))
    await runner(tmp_path, rejected)._report("INFO", "hello")
    assert len(rejected.events) == 1

    unanswered = Client(Unavailable("server down"))
    started = asyncio.get_running_loop().time()
    await runner(tmp_path, unanswered)._report("INFO", "hello")
    assert asyncio.get_running_loop().time() - started < 2
    assert len(unanswered.events) > 1, "a report the server did not answer is retried"


async def test_an_unreported_outcome_leaves_the_container_and_directory_for_adoption(tmp_path: Path) -> None:
    made = runner(tmp_path, Client(Unavailable("server down")))
    execution = Execution()
    await made.supervise(execution, report_start=False)  # type: ignore[arg-type]
    made.tidy()
    assert execution.abandoned and not execution.removed
    assert made.dir.path.exists(), "the next start adopts the container and reads its outputs from here"
    assert "adopted" in made.abandoned_as()


async def test_a_reported_outcome_removes_the_container_and_directory(tmp_path: Path) -> None:
    made = runner(tmp_path, Client(None))
    execution = Execution()
    await made.supervise(execution, report_start=False)  # type: ignore[arg-type]
    made.tidy()
    assert execution.removed and not execution.abandoned
    assert not made.dir.path.exists()


class FlakyLogs(Client):
    """Takes events; refuses log uploads with a 503 ``failures`` times, then keeps what it is sent."""

    def __init__(self, failures: int) -> None:
        super().__init__(None)
        self.failures = failures
        self.uploaded: list[bytes] = []

    async def upload_logs(self, run_id: str, attempt: int, text: bytes, worker_id: str) -> None:
        if self.failures:
            self.failures -= 1
            raise Unavailable("NATS is away")
        self.uploaded.append(text)


async def test_the_final_log_upload_outlasts_a_short_outage_and_a_long_one_does_not_hold_the_outcome(
    tmp_path: Path,
) -> None:
    client = FlakyLogs(failures=3)
    made = runner(tmp_path, client)
    execution = Execution()
    execution.logs.append(b"the op's last words\n")
    await made.supervise(execution, report_start=False)  # type: ignore[arg-type]
    assert len(client.uploaded) == 1 and b"the op's last words" in client.uploaded[0]
    assert [e.type for e in client.events] == ["COMPLETED"]

    away = FlakyLogs(failures=10_000)  # the deadline (0.3 s here) passes: the outcome is reported all the same
    made = runner(tmp_path / "again", away)
    await made.supervise(Execution(), report_start=False)  # type: ignore[arg-type]
    assert not away.uploaded and [e.type for e in away.events] == ["COMPLETED"]
