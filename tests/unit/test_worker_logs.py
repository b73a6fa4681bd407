"""The attempt's log capture: every line stamped with its time and its stream, whatever the chunking, bounded."""

from __future__ import annotations

import re

from gyoza.worker.runtimes.base import TRUNCATED_MARKER, LogCapture
from gyoza.worker.runtimes.docker import _entries

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (stdout|stderr) (.*)$")


def lines(capture: LogCapture) -> list[tuple[str, str]]:
    found = []
    for line in capture.text().decode().splitlines():
        match = LINE.match(line)
        assert match, f"not a stamped, marked line: {line!r}"
        found.append((match[1], match[2]))
    return found


def test_lines_are_stamped_and_marked_by_stream_whatever_the_chunking() -> None:
    capture = LogCapture()
    capture.append(b"hel")
    capture.append(b"lo\nwor", stderr=False)
    capture.append(b"oops\n", stderr=True)
    capture.append(b"ld\n")
    capture.append(b"no newline at the end", stderr=True)
    capture.close()
    assert lines(capture) == [
        ("stdout", "hello"), ("stderr", "oops"), ("stdout", "world"), ("stderr", "no newline at the end"),
    ]  # fmt: skip
    assert capture.stderr_tail() == "oops\nno newline at the end"


def test_replace_takes_a_complete_record_in_time_order_and_ignores_late_live_lines() -> None:
    capture = LogCapture()
    capture.append(b"live, partial view\n")
    capture.replace([
        ("2025-06-01T12:00:00.000002Z", "stderr", b"second\n"),
        ("2025-06-01T12:00:00.000001Z", "stdout", b"first\n"),
        ("2025-06-01T12:00:00.000003Z", "stdout", b"a long line split by the engine, "),
        ("2025-06-01T12:00:00.000004Z", "stdout", b"joined again\n"),
    ])  # fmt: skip
    capture.append(b"a live reader that is late\n")
    assert capture.text().decode().splitlines() == [
        "2025-06-01T12:00:00.000001Z stdout first",
        "2025-06-01T12:00:00.000002Z stderr second",
        "2025-06-01T12:00:00.000003Z stdout a long line split by the engine, joined again",
    ]
    assert capture.stderr_tail() == "second"


def test_the_limit_keeps_the_first_lines_and_says_so_while_the_stderr_tail_follows_the_end() -> None:
    capture = LogCapture(limit=200)
    for n in range(20):
        capture.append(f"line {n}\n".encode(), stderr=True)
    text = capture.text()
    assert len(text) <= 200 + len(TRUNCATED_MARKER) and text.endswith(TRUNCATED_MARKER)
    assert [line for _, line in lines_of(text)][:2] == ["line 0", "line 1"]
    assert capture.stderr_tail().endswith("line 19")


def lines_of(text: bytes) -> list[tuple[str, str]]:
    body = text.removesuffix(TRUNCATED_MARKER).decode()
    return [(m[1], m[2]) for m in map(LINE.match, body.splitlines()) if m]


def test_docker_log_entries_are_parsed_into_fixed_width_stamps() -> None:
    chunk = b"2025-06-01T12:00:00.1234567Z hello\n2025-06-01T12:00:01Z no fraction\n"
    assert _entries(chunk) == [
        ("2025-06-01T12:00:00.123456Z", b"hello\n"), ("2025-06-01T12:00:01.000000Z", b"no fraction\n"),
    ]  # fmt: skip
