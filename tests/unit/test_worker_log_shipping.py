"""How a worker ships its log lines live (below the HTTP boundary, with a recording server): only new lines, in
numbered chunks; a chunk that got no answer goes again with the same number (the server stores it once); the
truncation marker once; a reporter that cannot take live lines (``gyoza op test``'s terminal) gets none."""

from __future__ import annotations

from pathlib import Path

from gyoza.errors import Unavailable
from gyoza.schema import Assignment, Constraints, LogChunkIn, WorkerEventIn
from gyoza.worker.attempt import AttemptRunner
from gyoza.worker.runtimes.base import TRUNCATED_MARKER, LogCapture
from gyoza.worker.settings import WorkerSettings


class Server:
    """Takes shipments; ``failing`` of them first get no answer."""

    def __init__(self, failing: int = 0) -> None:
        self.failing = failing
        self.shipped: list[LogChunkIn] = []

    async def post_event(self, run_id: str, event: WorkerEventIn) -> None:
        """Events are not what these tests look at."""

    async def upload_logs(self, run_id: str, attempt: int, text: bytes, worker_id: str) -> None:
        """Nor the whole-log upload."""

    async def ship_logs(self, run_id: str, chunk: LogChunkIn) -> None:
        self.shipped.append(chunk)
        if self.failing:
            self.failing -= 1
            raise Unavailable("no answer")


class Terminal:
    async def post_event(self, run_id: str, event: WorkerEventIn) -> None: ...

    async def upload_logs(self, run_id: str, attempt: int, text: bytes, worker_id: str) -> None: ...


def runner(tmp_path: Path, reporter: object, limit: int = 1024) -> AttemptRunner:
    assignment = Assignment(
        run_id="r1", attempt=2, image="img", command=None, inputs={}, env={}, constraints=Constraints(),
        gpu_ids=[], timeout_seconds=None, op_definition=None, definition_version=None, output_specs=None,
    )  # fmt: skip
    settings = WorkerSettings(work_dir=tmp_path, name="w1", stop_grace=0.1, log_limit=limit, runtime="process")
    made = AttemptRunner(assignment, settings, reporter, runtime=None)  # type: ignore[arg-type]
    made.logs = LogCapture(limit)
    return made


async def test_only_new_lines_go_out_in_numbered_chunks(tmp_path: Path) -> None:
    server = Server()
    made = runner(tmp_path, server)
    made.logs.add("T1", "stdout", b"one\ntw")
    await made._ship_logs()
    made.logs.add("T2", "stdout", b"o\n")
    await made._ship_logs()
    await made._ship_logs()  # nothing new: nothing sent
    assert [(c.chunk, c.attempt, c.worker_id, c.text) for c in server.shipped] == [
        (1, 2, "w1", "T1 stdout one\n"),
        (2, 2, "w1", "T1 stdout two\n"),  # a line goes out once it is complete, stamped when it began
    ]


async def test_a_chunk_without_an_answer_is_sent_again_with_its_number(tmp_path: Path) -> None:
    server = Server(failing=1)
    made = runner(tmp_path, server)
    made.logs.add("T1", "stdout", b"one\n")
    await made._ship_logs()
    made.logs.add("T2", "stderr", b"two\n")
    await made._ship_logs()
    assert [(c.chunk, c.text) for c in server.shipped] == [
        (1, "T1 stdout one\n"),
        (1, "T1 stdout one\nT2 stderr two\n"),  # the unanswered chunk 1 again, now with what came since
    ]


async def test_lines_past_the_limit_are_not_shipped_and_the_marker_goes_once(tmp_path: Path) -> None:
    server = Server()
    made = runner(tmp_path, server, limit=40)
    made.logs.add("T1", "stdout", b"a" * 10 + b"\n" + b"b" * 60 + b"\n")
    await made._ship_logs()
    made.logs.add("T2", "stdout", b"more\n")
    await made._ship_logs()
    assert "".join(c.text for c in server.shipped) == "T1 stdout aaaaaaaaaa\n" + TRUNCATED_MARKER.decode()


async def test_a_reporter_without_live_lines_gets_none(tmp_path: Path) -> None:
    made = runner(tmp_path, Terminal())
    made.logs.add("T1", "stdout", b"one\n")
    await made._ship_logs()  # raises nothing: there is simply nothing to send the lines to
    await made._ship_logs_periodically()  # returns at once instead of looping
