"""``gyoza op test`` runs an op through the worker's own attempt runner, with a reporter standing in for the server:
events reach the terminal as they come, and the outputs get the server's verdict (the state machine's rule)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gyoza.core import statemachine as sm
from gyoza.opfile.trial import TerminalReporter
from gyoza.schema import Assignment, Constraints, OutputSpec, PullCredential, ValueType
from gyoza.worker.attempt import AttemptRunner
from gyoza.worker.iocontract import ExitStatus
from gyoza.worker.runtimes.base import LaunchSpec, LogCapture
from gyoza.worker.settings import WorkerSettings
from gyoza.worker.telemetry import UsageMeter
from tests.unit.test_statemachine import NOW, event, running


class Op:
    """An op that appends ``events`` to events.jsonl, writes ``outputs`` and exits 0."""

    def __init__(self, spec: LaunchSpec, events: list[dict[str, Any]], outputs: dict[str, Any]) -> None:
        self.logs = LogCapture()
        self.meter = UsageMeter()
        self.spec, self.events, self.outputs = spec, events, outputs

    async def wait(self) -> ExitStatus:
        with (self.spec.io_dir / "events.jsonl").open("a") as file:
            file.writelines(json.dumps(event) + "\n" for event in self.events)
            file.write('{"type": "PROGRESS", "msg": 9')  # an unfinished last line is not forwarded
        (self.spec.io_dir / "outputs.json").write_text(json.dumps(self.outputs))
        self.logs.append(b"hello from the op\n")
        return ExitStatus(0)

    async def stop(self, grace: float) -> None:
        """It exits by itself."""

    async def remove(self) -> None:
        """Nothing to remove."""

    def abandon(self) -> bool:
        raise AssertionError("a local run settles every report: nothing is left to adopt")


class Runtime:
    def __init__(self, events: list[dict[str, Any]], outputs: dict[str, Any]) -> None:
        self.events, self.outputs = events, outputs

    async def ensure_image(self, image: str, login: PullCredential | None = None) -> None:
        """Present."""

    async def launch(self, spec: LaunchSpec, logs: LogCapture) -> Op:
        return Op(spec, self.events, self.outputs)

    async def images(self) -> list[str]:
        return []

    async def orphans(self, worker_id: str, work_dir: Path) -> list[Any]:
        return []


SPECS = {"label": OutputSpec(type=ValueType.STRING), "score": OutputSpec(type=ValueType.FLOAT)}


def assignment(output_specs: dict[str, OutputSpec]) -> Assignment:
    return Assignment(
        run_id="op-test-1", attempt=1, image="img", command=None, inputs={}, env={}, constraints=Constraints(),
        gpu_ids=[], timeout_seconds=None, op_definition="op", definition_version="1", output_specs=output_specs,
    )  # fmt: skip


async def run_locally(tmp_path: Path, outputs: dict[str, Any]) -> tuple[TerminalReporter, list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []
    reporter = TerminalReporter(SPECS, lambda kind, msg: seen.append((kind, msg)))
    events = [{"type": "INFO", "msg": "loaded"}, {"type": "PROGRESS", "msg": 150}, {"type": "OTHER"}]
    settings = WorkerSettings(work_dir=tmp_path, name="gyoza-op-test", runtime="process")
    runner = AttemptRunner(assignment(SPECS), settings, reporter, Runtime(events, outputs))  # type: ignore[arg-type]
    await asyncio.wait_for(runner.run(), 10)
    assert not (tmp_path / "op-test-1-1").exists(), "the attempt directory is removed once the outcome is in"
    return reporter, seen


async def test_events_reach_the_terminal_as_the_worker_forwards_them(tmp_path: Path) -> None:
    reporter, seen = await run_locally(tmp_path, {"label": "cat", "score": 0.9})
    assert seen == [("INFO", "loaded"), ("PROGRESS", 100)]
    assert reporter.final is not None
    assert (reporter.final.type, reporter.final.outputs) == ("COMPLETED", {"label": "cat", "score": 0.9})
    assert "stdout hello from the op" in reporter.final.logs


@pytest.mark.parametrize(
    "outputs", [{"label": "cat"}, {"score": "high"}, {}], ids=["missing", "invalid", "both-missing"]
)
async def test_outputs_get_the_verdict_the_server_would_give(tmp_path: Path, outputs: dict[str, Any]) -> None:
    reporter, _ = await run_locally(tmp_path, outputs)
    record = running(output_specs=SPECS)  # the same outputs reported to the server
    sm.apply_worker_event(record, event("COMPLETED", outputs=outputs, exit_code=0), NOW)
    verdict = record.current.state_reason
    assert reporter.final is not None and reporter.final.reason is not None
    assert (reporter.final.type, reporter.final.reason.value, reporter.final.error) == (
        "FAILED", verdict.code.value, verdict.message,
    )  # fmt: skip
