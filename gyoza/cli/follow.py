"""Following a run until it ends (``run --wait``, ``runs watch``, ``runs logs -f``) over its live stream: its
events, why it waits as that changes, its log lines, ``--timeout`` and Ctrl-C — both of which leave the run going
on the server, and say so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.text import Text

from gyoza.cli import render
from gyoza.cli.errors import EXIT_INTERRUPTED, EXIT_RUN_FAILED, EXIT_TIMEOUT, fail
from gyoza.client import GyozaClient
from gyoza.schema import Event, EventType, OpRun, RunState, RunStreamEnd, RunStreamEvent, RunStreamLog, RunStreamRun

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
    ``on_status``, until the run is terminal; return it. ``WaitTimedOut`` after ``timeout`` seconds.

    Follows the run's stream (GET /runs/{id}/stream): events come as they are written, and the run as it stands
    whenever its state or reason changes (a PENDING run's reason changes without an event); nothing is polled."""
    shown, last = "", None
    for item in client.stream(run_id, timeout=timeout):
        if isinstance(item, RunStreamEvent):
            on_event(item.event)
        elif isinstance(item, RunStreamRun):
            last = item.run
            status = render.waiting_status(item.run)
            if status and status != shown:
                on_status(item.run, status)
            shown = status
        elif isinstance(item, RunStreamEnd):
            return item.run
    raise WaitTimedOut(last or client.get_run(run_id), timeout or 0.0)


def follow_logs(client: GyozaClient, run_id: str, attempt: int | None, as_json: bool) -> OpRun:
    """Print the run's log lines (of every attempt, or of ``attempt``) as the op writes them, like ``docker logs
    -f``: what was written so far first, then each new line, until the run ends; return it."""
    for item in client.stream(run_id):
        if isinstance(item, RunStreamLog) and attempt in (None, item.log.attempt):
            if as_json:
                typer.echo(render.json_line(item.log))
            else:
                typer.echo(item.log.text, nl=False)
        elif isinstance(item, RunStreamEnd):
            return item.run
    raise AssertionError("a run stream ends with its end item")  # the client reconnects until then, or raises


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
