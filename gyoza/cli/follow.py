"""Following a run until it ends (``run --wait``, ``runs watch``): its events, why it waits as that changes,
``--timeout`` and Ctrl-C — both of which leave the run going on the server, and say so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.text import Text

from gyoza.cli import render
from gyoza.cli.errors import EXIT_INTERRUPTED, EXIT_RUN_FAILED, EXIT_TIMEOUT, fail
from gyoza.client import GyozaClient
from gyoza.schema import TERMINAL_STATES, Event, EventType, OpRun, RunState

POLL_S = 0.25

OnEvent = Callable[[Event], None]
OnStatus = Callable[[OpRun, str], None]


class WaitTimedOut(Exception):
    """``--timeout`` passed; ``run`` is the last state seen (not terminal)."""

    def __init__(self, run: OpRun, timeout: float) -> None:
        super().__init__(run.id)
        self.run, self.timeout = run, timeout


def follow(
    client: GyozaClient, run_id: str, on_event: OnEvent, on_status: OnStatus, timeout: float | None = None
) -> OpRun:
    """Feed every event of the run (from the first) to ``on_event``, and each new ``render.waiting_status`` to
    ``on_status``, until the run is terminal; return it. ``WaitTimedOut`` after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    after, shown = 0, ""
    while True:
        run = client.get_run(run_id)
        # Read after the run: a state and its event are written together, so the terminal event is in this page.
        for event in client.run_events(run_id, after):
            on_event(event)
            after = event.id
        if run.state in TERMINAL_STATES:
            return run
        # A PENDING run's reason changes without an event (the scheduler rewrites it): shown when it changes.
        status = render.waiting_status(run)
        if status and status != shown:
            on_status(run, status)
        shown = status
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimedOut(run, timeout or 0.0)
        time.sleep(POLL_S)


def follow_with_bar(client: GyozaClient, run: OpRun, timeout: float | None) -> OpRun:
    """A live progress bar on stderr, INFO lines and waiting reasons above it, until the run is terminal."""
    with render.progress_bar() as bar:
        task = bar.add_task(f"{run.id[:8]} {run.state.value}", total=100, completed=run.progress)

        def show(event: Event) -> None:
            if event.type == EventType.PROGRESS and isinstance(event.msg, int):
                bar.update(task, completed=event.msg)
            elif event.type in (EventType.INFO, EventType.ERROR, EventType.RETRIED, EventType.UNASSIGNED):
                bar.console.print(Text(f"  {event.type.value.lower()}: {event.msg}"))
            if event.type == EventType.RETRIED:
                bar.update(task, completed=0)
            bar.update(task, description=f"{run.id[:8]} {event.state.value}")

        def status(current: OpRun, text: str) -> None:
            bar.console.print(Text(f"  {current.state.value.lower()}: {text}"))
            bar.update(task, description=f"{run.id[:8]} {current.state.value} ({current.state_reason.code.value})")

        return follow(client, run.id, show, status, timeout)


@contextmanager
def detachable(run_id: str, as_json: bool = False) -> Iterator[None]:
    """Ctrl-C or ``--timeout`` stop the waiting, never the run: say where it went on and how to find it again."""
    hint = f"gyoza runs watch {run_id}"
    try:
        yield
    except KeyboardInterrupt:
        raise fail(f"detached; run {run_id} continues on the server ({hint})", EXIT_INTERRUPTED) from None
    except WaitTimedOut as exc:
        if as_json:
            render.print_json(exc.run)
        still = render.waiting_status(exc.run) or exc.run.state_reason.code.value
        raise fail(
            f"timed out after {exc.timeout:g} s: run {run_id} is still {exc.run.state.value} ({still}); it continues "
            f"on the server ({hint}, or gyoza runs cancel {run_id})", EXIT_TIMEOUT,
        ) from None  # fmt: skip


def finish(run: OpRun) -> None:
    """Outputs on stdout (exit 0), or the reason on stderr (exit 1)."""
    if run.state == RunState.COMPLETED:
        typer.echo(json.dumps(run.outputs, indent=2))
        return
    reason = run.state_reason
    typer.secho(f"run {run.id} {run.state.value}: {reason.code.value}: {reason.message}", err=True, fg="red")
    raise typer.Exit(EXIT_RUN_FAILED)


def exit_for(run: OpRun) -> None:
    if run.state != RunState.COMPLETED:
        raise typer.Exit(EXIT_RUN_FAILED)
