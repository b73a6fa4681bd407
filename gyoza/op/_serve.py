"""A warm instance's serve loop: the op's setup once, then attempt after attempt (``_contract``, "A warm instance").

Attempts are taken one at a time. Each runs exactly as a cold attempt does (``run_attempt``), in its own directory,
with its own ``GYOZA_*`` variables; a failing attempt fails alone and the instance takes the next. A failing setup
fails the attempt that was waiting and ends the instance. Polling a file keeps the contract language-neutral (any
image can serve with a shell loop); one ``stat`` every 2 ms costs nothing an op would notice.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from gyoza.op._context import io_dir
from gyoza.op._contract import ATTEMPT_FILE, ATTEMPTS_DIR, DONE_FILE, IO_DIR_VAR, NEXT_FILE, SERVE_VAR
from gyoza.op._runner import report_failure, run_attempt, run_cold, setup_of, write_json_atomically

POLL_S = 0.002


def serving() -> bool:
    """Whether the worker started this container as a warm instance."""
    return os.environ.get(SERVE_VAR) == "1"


def entry(func: Callable[..., Any]) -> int:
    """What ``python -m gyoza.op`` and ``run()`` do: serve when asked to, else one cold attempt."""
    return serve(func) if serving() else run_cold(func)


def _take_next(instance: Path) -> str:
    pointer = instance / NEXT_FILE
    while True:
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            time.sleep(POLL_S)
            continue
        pointer.unlink()
        return name


def serve(func: Callable[..., Any]) -> int:
    """Set up, then run each attempt the worker hands in; returns only when the setup failed (exit code 1)."""
    instance = io_dir()
    failure: Exception | None = None
    setup = setup_of(func)
    if setup is not None:
        try:
            setup()
        except Exception as exc:  # reported as the waiting attempt's failure
            failure = exc
    while True:
        directory = instance / ATTEMPTS_DIR / _take_next(instance)
        variables: dict[str, str] = json.loads((directory / ATTEMPT_FILE).read_text(encoding="utf-8"))
        os.environ.update(variables)
        os.environ[IO_DIR_VAR] = str(directory)
        if failure is not None:
            report_failure(failure)
            code = 1
        else:
            code = run_attempt(func)
        sys.stdout.flush()
        sys.stderr.flush()
        write_json_atomically(directory / DONE_FILE, {"exit_code": code})
        if failure is not None:
            return 1


def run(func: Callable[..., Any]) -> NoReturn:
    """Run ``func`` as the worker asks (one attempt, or a warm instance's serve loop) and exit with its code:
    ``if __name__ == "__main__": run(classify)``."""
    sys.exit(entry(func))
