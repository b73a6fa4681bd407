"""The op IO contract on the worker's side (SPEC §7): the attempt directory, how an exit becomes an outcome, and
which events.jsonl lines are forwarded."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from gyoza.schema import FailureReason
from gyoza.worker.iocontract import AttemptDir, ExitStatus, parse_event_line


@pytest.fixture
def attempt(tmp_path: Path) -> AttemptDir:
    directory = AttemptDir(tmp_path / "work", "run-1", 2)
    directory.prepare({"text": "héllo", "n": 3})
    return directory


def write(attempt: AttemptDir, name: str, content: str) -> None:
    (attempt.path / name).write_text(content)


# --- the directory -------------------------------------------------------------------------------------------------


def test_prepare_writes_inputs_in_a_directory_per_attempt(tmp_path: Path, attempt: AttemptDir) -> None:
    assert attempt.path == tmp_path / "work" / "run-1-2"
    assert json.loads((attempt.path / "inputs.json").read_text()) == {"text": "héllo", "n": 3}
    # The op may run as any user inside its container, so it must be able to write its outputs here.
    assert stat.S_IMODE(attempt.path.stat().st_mode) == 0o777
    assert attempt.events_file == attempt.path / "events.jsonl"


def test_remove_deletes_the_directory_and_tolerates_a_second_call(attempt: AttemptDir) -> None:
    write(attempt, "outputs.json", "{}")
    attempt.remove()
    assert not attempt.path.exists()
    attempt.remove()


# --- outcomes ------------------------------------------------------------------------------------------------------


def test_exit_zero_with_outputs_completes(attempt: AttemptDir) -> None:
    write(attempt, "outputs.json", json.dumps({"label": "cat", "score": 0.9}))
    outcome = attempt.outcome(ExitStatus(0), stderr_tail="")
    assert (outcome.type, outcome.outputs, outcome.exit_code) == ("COMPLETED", {"label": "cat", "score": 0.9}, 0)


def test_exit_zero_without_outputs_completes_with_none(attempt: AttemptDir) -> None:
    # Whether an output was required is the server's check against output_specs (OUTPUT_MISSING).
    outcome = attempt.outcome(ExitStatus(0), stderr_tail="")
    assert (outcome.type, outcome.outputs) == ("COMPLETED", {})


@pytest.mark.parametrize(("content", "problem"), [("{not json", "outputs.json"), ("[1, 2]", "JSON object")])
def test_unreadable_outputs_are_output_invalid(attempt: AttemptDir, content: str, problem: str) -> None:
    write(attempt, "outputs.json", content)
    outcome = attempt.outcome(ExitStatus(0), stderr_tail="")
    assert (outcome.type, outcome.reason) == ("FAILED", FailureReason.OUTPUT_INVALID)
    assert problem in outcome.error


def test_non_zero_exit_prefers_error_json(attempt: AttemptDir) -> None:
    write(attempt, "error.json", json.dumps({"message": "bad input", "type": "ValueError"}))
    write(attempt, "outputs.json", json.dumps({"partial": True}))
    outcome = attempt.outcome(ExitStatus(1), stderr_tail="Traceback ...")
    assert (outcome.type, outcome.reason, outcome.exit_code) == ("FAILED", FailureReason.EXIT_CODE, 1)
    assert outcome.error == "ValueError: bad input"
    assert outcome.outputs == {}, "outputs of a failed attempt are not reported"


def test_non_zero_exit_falls_back_to_the_stderr_tail(attempt: AttemptDir) -> None:
    outcome = attempt.outcome(ExitStatus(3), stderr_tail="loading\ndisk on fire")
    assert (outcome.reason, outcome.error, outcome.exit_code) == (FailureReason.EXIT_CODE, "loading\ndisk on fire", 3)


def test_non_zero_exit_without_any_message_names_the_code(attempt: AttemptDir) -> None:
    outcome = attempt.outcome(ExitStatus(137), stderr_tail="")
    assert outcome.error == "exited with code 137"


def test_unreadable_error_json_is_still_shown(attempt: AttemptDir) -> None:
    write(attempt, "error.json", "segfault in model loader")
    assert attempt.outcome(ExitStatus(1), stderr_tail="tail").error == "segfault in model loader"


def test_oom_kill_wins_over_the_exit_code(attempt: AttemptDir) -> None:
    outcome = attempt.outcome(ExitStatus(137, oom_killed=True), stderr_tail="Killed")
    assert (outcome.type, outcome.reason) == ("FAILED", FailureReason.OOM_KILLED)
    assert "ram_mb" in outcome.error


def test_timeout_and_cancel_win_over_everything(attempt: AttemptDir) -> None:
    write(attempt, "outputs.json", "{}")
    timed_out = attempt.outcome(ExitStatus(143, oom_killed=True, timed_out=True), stderr_tail="")
    assert (timed_out.type, timed_out.reason) == ("FAILED", FailureReason.TIMEOUT)
    cancelled = attempt.outcome(ExitStatus(143, cancelled=True), stderr_tail="")
    assert (cancelled.type, cancelled.reason) == ("CANCELLED", None)


# --- events.jsonl --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ('{"type":"PROGRESS","msg":42}', ("PROGRESS", 42)),
        ('{"type":"PROGRESS","msg":42.9}', ("PROGRESS", 42)),
        ('{"type":"PROGRESS","msg":250}', ("PROGRESS", 100)),
        ('{"type":"PROGRESS","msg":-5}', ("PROGRESS", 0)),
        ('{"type":"INFO","msg":"model loaded"}', ("INFO", "model loaded")),
        ('{"type":"INFO","msg":7}', ("INFO", "7")),
    ],
)
def test_progress_and_info_lines_are_forwarded(line: str, event: tuple[str, str | int]) -> None:
    assert parse_event_line(line) == event


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "[1, 2]",
        '{"type":"COMPLETED","msg":""}',  # an op cannot report its own end: the worker decides that
        '{"type":"PROGRESS","msg":"half"}',
        '{"type":"PROGRESS","msg":true}',
        '{"msg":3}',
    ],
)
def test_other_lines_are_ignored(line: str) -> None:
    assert parse_event_line(line) is None


def test_long_info_messages_are_bounded() -> None:
    event = parse_event_line(json.dumps({"type": "INFO", "msg": "x" * 50_000}))
    assert event is not None and len(str(event[1])) == 10_000


# --- one contract, both sides ----------------------------------------------------------------------------------------


def test_the_op_sdk_reads_what_the_worker_writes_and_the_worker_what_the_op_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gyoza.op
    from gyoza.op._runner import run_attempt
    from gyoza.schema import Assignment, Constraints
    from gyoza.worker.attempt import AttemptRunner
    from gyoza.worker.launch import launch_spec
    from gyoza.worker.settings import WorkerSettings

    work = Assignment(
        run_id="run-9", attempt=2, image="img", command=["op"], inputs={"n": 3}, env={"MODEL": "m"},
        constraints=Constraints(), gpu_ids=[0, 2], timeout_seconds=None, op_definition="double",
        definition_version="1.0", output_specs=None,
    )  # fmt: skip
    runner = AttemptRunner(work, WorkerSettings(work_dir=tmp_path, runtime="process"), reporter=None, runtime=None)  # type: ignore[arg-type]
    runner.dir.prepare(work.inputs)
    settings = WorkerSettings(work_dir=tmp_path / "work", runtime="process")
    for name, value in launch_spec(work, settings, runner.dir.path).env.items():
        monkeypatch.setenv(name, value)
    assert gyoza.op.context() == gyoza.op.Context(
        io_dir=runner.dir.path,
        run_id="run-9",
        attempt=2,
        op_name="double",
        op_version="1.0",
        gpu_ids=(0, 2),
        cache_dir=tmp_path / "cache" / "double",  # the definition's, beside the attempt directories
    )
    assert (tmp_path / "cache" / "double").is_dir()

    def double(n: int) -> dict[str, int]:
        gyoza.op.info("doubling")
        gyoza.op.progress(50)
        return {"twice": 2 * n}

    assert run_attempt(double) == 0
    lines = runner.dir.events_file.read_text().splitlines()
    assert [parse_event_line(line) for line in lines] == [("INFO", "doubling"), ("PROGRESS", 50)]
    outcome = runner.dir.outcome(ExitStatus(0), stderr_tail="")
    assert (outcome.type, outcome.outputs) == ("COMPLETED", {"twice": 6})
