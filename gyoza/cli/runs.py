"""``gyoza run NAME -i k=v [--wait]`` and ``gyoza runs list|get|cancel|retry|logs|watch``."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from gyoza.cli import render
from gyoza.cli.errors import EXIT_RUN_FAILED, api
from gyoza.client import GyozaClient
from gyoza.schema import TERMINAL_STATES, Event, EventType, InputSpec, OpRun, RunListQuery, RunState, ValueType

app = typer.Typer(no_args_is_help=True, help="List, inspect, cancel, retry and follow runs.")

POLL_S = 0.25
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON (nothing else on stdout)")]
RunId = Annotated[str, typer.Argument(help="Run id")]

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


# --- -i key=value ----------------------------------------------------------------------------------------------------


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"expected an int, got {raw!r}") from None


def _float(raw: str) -> float:
    try:
        number = float(raw)
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None
    if not math.isfinite(number):  # JSON has no NaN or infinity
        raise ValueError(f"expected a finite number, got {raw!r}")
    return number


def _bool(raw: str) -> bool:
    if raw.lower() not in _TRUE | _FALSE:
        raise ValueError(f"expected true or false, got {raw!r}")
    return raw.lower() in _TRUE


def _json(kind: ValueType, raw: str) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        if kind == ValueType.ANY:
            return raw  # "any" takes JSON when it parses, else the text itself
        raise ValueError(f"expected JSON ({kind.value}), got {raw!r}") from None
    wanted = {ValueType.OBJECT: dict, ValueType.ARRAY: list}.get(kind)
    if wanted is not None and not isinstance(value, wanted):
        raise ValueError(f"expected a JSON {kind.value}, got {raw!r}")
    return value


_SCALARS: dict[ValueType, Callable[[str], Any]] = {
    ValueType.STRING: str, ValueType.INT: _int, ValueType.FLOAT: _float, ValueType.BOOL: _bool,
}  # fmt: skip


def parse_value(kind: ValueType, raw: str) -> Any:
    """A command-line string as the input type asks; ``ValueError`` says what was expected."""
    scalar = _SCALARS.get(kind)
    return scalar(raw) if scalar else _json(kind, raw)


def parse_inputs(specs: Mapping[str, InputSpec], pairs: list[str]) -> dict[str, Any]:
    """``-i key=value`` pairs typed by the definition's input specs; any problem is a usage error (exit 2)."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="'-i' / '--input'")
        spec = specs.get(key)
        if spec is None:
            known = ", ".join(sorted(specs)) or "none"
            raise typer.BadParameter(f"unknown input {key!r} (inputs: {known})", param_hint="'-i' / '--input'")
        try:
            inputs[key] = parse_value(spec.type, raw)
        except ValueError as exc:
            raise typer.BadParameter(f"input {key!r}: {exc}", param_hint="'-i' / '--input'") from None
    return inputs


# --- following a run -------------------------------------------------------------------------------------------------


def follow(client: GyozaClient, run_id: str, on_event: Callable[[Event], None]) -> OpRun:
    """Feed every event of the run (from the first) to ``on_event`` until the run is terminal; return the run."""
    after = 0
    while True:
        run = client.get_run(run_id)
        # Read after the run: a state and its event are written together, so the terminal event is in this page.
        for event in client.run_events(run_id, after):
            on_event(event)
            after = event.id
        if run.state in TERMINAL_STATES:
            return run
        time.sleep(POLL_S)


def follow_with_bar(client: GyozaClient, run: OpRun) -> OpRun:
    """A live progress bar on stderr, INFO lines above it, until the run is terminal."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=render.console(stderr=True)) as bar:
        task = bar.add_task(f"{run.id[:8]} {run.state.value}", total=100, completed=run.progress)

        def show(event: Event) -> None:
            if event.type == EventType.PROGRESS and isinstance(event.msg, int):
                bar.update(task, completed=event.msg)
            elif event.type in (EventType.INFO, EventType.ERROR, EventType.RETRIED, EventType.UNASSIGNED):
                bar.console.print(Text(f"  {event.type.value.lower()}: {event.msg}"))
            if event.type == EventType.RETRIED:
                bar.update(task, completed=0)
            bar.update(task, description=f"{run.id[:8]} {event.state.value}")

        return follow(client, run.id, show)


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


# --- gyoza run -------------------------------------------------------------------------------------------------------


def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Definition name")],
    inputs: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="key=value, typed by the op's input specs (repeat)")
    ] = None,
    priority: Annotated[int | None, typer.Option(min=0, max=100, help="0-100, higher runs first [default 5]")] = None,
    version: Annotated[str | None, typer.Option(help="Definition version (default: the latest)")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show live progress until the run ends, then its outputs")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Start a run of a deployed op. Without --wait prints the run id; with --wait exits 1 if the run fails."""
    with api(ctx) as client:
        definition = client.get_definition(name, version)
        values = parse_inputs(definition.input_specs, inputs or [])
        # Pin the version whose specs typed the inputs, so a concurrent deploy cannot change their meaning.
        created = client.create_run(name, values, priority, definition.version)
        if not wait:
            if as_json:
                render.print_json(created)
            else:
                typer.echo(created.id)
                typer.echo(f"follow it with: gyoza runs watch {created.id}", err=True)
            return
        if as_json:
            final = follow(client, created.id, lambda event: None)
            render.print_json(final)
            exit_for(final)
            return
        typer.echo(f"run {created.id} ({render.run_op(created)})", err=True)
        final = follow_with_bar(client, created)
    finish(final)


# --- gyoza runs ... --------------------------------------------------------------------------------------------------


@app.command("list")
def list_runs(
    ctx: typer.Context,
    state: Annotated[
        list[RunState] | None, typer.Option(case_sensitive=False, help="Only runs in this state (repeat for several)")
    ] = None,
    op: Annotated[str | None, typer.Option(help="Only runs of this definition")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="At most this many runs")] = 10,
    as_json: JsonFlag = False,
) -> None:
    """Runs, newest first."""
    query = RunListQuery(state=state or None, op_definition=op, limit=limit)
    with api(ctx) as client:
        page = client.list_runs(query)
    if as_json:
        render.print_json(page)
        return
    render.console().print(render.runs_table(page.data))
    if page.has_more:
        typer.echo("(more runs exist: raise --limit, max 100, or filter with --state/--op)", err=True)


@app.command("get")
def get_run(ctx: typer.Context, run_id: RunId, as_json: JsonFlag = False) -> None:
    """One run: state and reason, progress, inputs, outputs, timestamps."""
    with api(ctx) as client:
        found = client.get_run(run_id)
    if as_json:
        render.print_json(found)
    else:
        render.console().print(render.run_detail(found))


@app.command("cancel")
def cancel_run(ctx: typer.Context, run_id: RunId, as_json: JsonFlag = False) -> None:
    """Cancel a run (idempotent once CANCELLED; refused once COMPLETED or FAILED)."""
    with api(ctx) as client:
        changed = client.cancel_run(run_id)
    if as_json:
        render.print_json(changed)
    else:
        note = " (cancel requested; the worker stops it)" if changed.state == RunState.RUNNING else ""
        typer.echo(f"run {changed.id} {changed.state.value}{note}")


@app.command("retry")
def retry_run(ctx: typer.Context, run_id: RunId, as_json: JsonFlag = False) -> None:
    """Start a new attempt of a FAILED or CANCELLED run."""
    with api(ctx) as client:
        changed = client.retry_run(run_id)
    if as_json:
        render.print_json(changed)
    else:
        typer.echo(f"run {changed.id} attempt {changed.current_attempt} {changed.state.value}")


@app.command("logs")
def logs(
    ctx: typer.Context,
    run_id: RunId,
    attempt: Annotated[int | None, typer.Option(min=1, help="Attempt number (default: the current one)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"run_id", "attempt", "logs"} as JSON')] = False,
) -> None:
    """The captured stdout/stderr of an attempt, as plain text."""
    with api(ctx) as client:
        text = client.run_logs(run_id, attempt)
        if as_json:
            number = attempt or client.get_run(run_id).current_attempt
            render.print_json({"run_id": run_id, "attempt": number, "logs": text})
            return
    typer.echo(text, nl=bool(text) and not text.endswith("\n"))


@app.command("watch")
def watch(
    ctx: typer.Context,
    run_id: RunId,
    as_json: Annotated[bool, typer.Option("--json", help="Print each event as one JSON line")] = False,
) -> None:
    """Follow a run live (state changes, progress, INFO lines) until it ends; exit 1 if it failed or was cancelled."""
    with api(ctx) as client:
        final = follow(client, run_id, lambda e: typer.echo(render.json_line(e) if as_json else render.event_line(e)))
    if not as_json:
        if final.state == RunState.COMPLETED:
            typer.echo(f"outputs: {json.dumps(final.outputs)}")
        else:
            typer.echo(f"{final.state.value}: {final.state_reason.code.value}: {final.state_reason.message}")
    exit_for(final)
