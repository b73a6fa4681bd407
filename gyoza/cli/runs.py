"""``gyoza run NAME -i k=v [--wait]`` and ``gyoza runs list|get|cancel|retry|delete|deliveries|logs|watch``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from gyoza.cli import render
from gyoza.cli.batches import run_batch
from gyoza.cli.errors import api
from gyoza.cli.fit import warn_if_unplaceable
from gyoza.cli.follow import detachable, exit_for, finish, follow, follow_logs, follow_with_bar
from gyoza.client import GyozaClient
from gyoza.schema import DeliveryList, Event, InputSpec, OpRun, RunListQuery, RunState, ValueType

app = typer.Typer(no_args_is_help=True, help="List, inspect, cancel, retry, delete and follow runs.")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON (nothing else on stdout)")]
RunId = Annotated[str, typer.Argument(help="Run id")]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        min=0, metavar="SECONDS", help="Stop waiting after this long (exit 4); the run continues on the server"
    ),
]

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


# --- gyoza run -------------------------------------------------------------------------------------------------------


def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Definition name")],
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", metavar="KEY=VALUE", help="Typed by the op's input specs (repeat)"),
    ] = None,
    priority: Annotated[int | None, typer.Option(min=0, max=100, help="0-100, higher runs first [default 5]")] = None,
    version: Annotated[str | None, typer.Option(help="Definition version (default: the latest)")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show live progress (and why the run waits) until it ends, then its outputs")
    ] = False,
    timeout: TimeoutOption = None,
    inputs_file: Annotated[
        Path | None,
        typer.Option(
            "--inputs-file", metavar="FILE", help="A run per line: one JSON object of inputs each (JSONL; - for stdin)"
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Start a run of a deployed op. Without --wait prints the run id; with --wait exits 1 if the run fails.

    With --inputs-file, one run per line, created in batches (the whole file is checked first: a bad line creates
    nothing); --wait then shows one progress bar for all of them and prints each run's outcome as a JSON line."""
    if timeout is not None and not wait:
        raise typer.BadParameter("needs --wait", param_hint="'--timeout'")
    if inputs_file is not None:
        if inputs:
            raise typer.BadParameter("give inputs with -i or --inputs-file, not both", param_hint="'--inputs-file'")
        run_batch(ctx, name, inputs_file, priority, version, wait, timeout, as_json)
        return
    with api(ctx) as client:
        definition = client.get_definition(name, version)
        values = parse_inputs(definition.input_specs, inputs or [])
        # Pin the version whose specs typed the inputs, so a concurrent deploy cannot change their meaning.
        created = client.create_run(name, values, priority, definition.version)
        warn_if_unplaceable(client, created.constraints, created.tags, f"run {created.id}")
        if not wait:
            if as_json:
                render.print_json(created)
            else:
                typer.echo(created.id)
                typer.echo(f"follow it with: gyoza runs watch {created.id}", err=True)
            return
        with detachable(created.id, as_json):
            if as_json:
                final = follow(client, created.id, lambda event: None, _status_to_stderr, timeout)
                render.print_json(final)
                exit_for(final)
                return
            typer.echo(f"run {created.id} ({render.run_op(created)})", err=True)
            final = follow_with_bar(client, created, timeout)
    finish(final)


def _status_to_stderr(run: OpRun, status: str) -> None:
    # With --json stdout holds only JSON; why the run waits still reaches the person at the terminal.
    typer.echo(render.status_line(run, status), err=True)


# --- gyoza runs ... --------------------------------------------------------------------------------------------------


@app.command("list")
def list_runs(
    ctx: typer.Context,
    state: Annotated[
        list[RunState] | None, typer.Option(case_sensitive=False, help="Only runs in this state (repeat for several)")
    ] = None,
    op: Annotated[str | None, typer.Option(help="Only runs of this definition")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, max=100, help="At most this many runs [default 10]; with --all the page size")
    ] = None,
    starting_after: Annotated[
        str | None, typer.Option(metavar="RUN_ID", help="The page after this run (older runs): next-page cursor")
    ] = None,
    ending_before: Annotated[
        str | None, typer.Option(metavar="RUN_ID", help="The page before this run (newer runs): previous-page cursor")
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every matching run, following the cursors page by page (100 a page)")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Runs, newest first (with --ending-before and --all: oldest first, from that run on)."""
    if starting_after and ending_before:
        raise typer.BadParameter("use --starting-after or --ending-before, not both", param_hint="'--ending-before'")
    size = limit or (100 if every else 10)
    query = RunListQuery(
        state=state or None, op_definition=op, limit=size, starting_after=starting_after, ending_before=ending_before
    )
    with api(ctx) as client:
        if every:
            _list_every_run(client, query, as_json)
            return
        page = client.list_runs(query)
    if as_json:
        render.print_json(page)
        return
    render.console().print(render.runs_table(page.data))
    if page.has_more and page.data:
        cursor = ("--ending-before", page.data[0].id) if ending_before else ("--starting-after", page.data[-1].id)
        typer.echo(f"(more runs exist: the next page with {cursor[0]} {cursor[1]}, or all with --all)", err=True)


def _list_every_run(client: GyozaClient, query: RunListQuery, as_json: bool) -> None:
    runs = client.iter_runs(query)
    if as_json:
        render.print_json_list(runs)  # written page by page, so a script can read a long list as it comes
    else:
        render.console().print(render.runs_table(list(runs)))


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
        note = f" ({render.CANCEL_PENDING})" if render.cancel_pending(changed) else ""
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


@app.command("delete")
def delete_run(ctx: typer.Context, run_id: RunId) -> None:
    """Delete a finished run with its logs (an admin key; a run not finished is refused: cancel it first)."""
    with api(ctx) as client:
        client.delete_run(run_id)
    typer.echo(f"run {run_id} deleted")


@app.command("deliveries")
def deliveries(ctx: typer.Context, run_id: RunId, as_json: JsonFlag = False) -> None:
    """The run's webhook deliveries: state, attempts and the last answer of each."""
    with api(ctx) as client:
        found = client.deliveries(run_id)
    if as_json:
        render.print_json(DeliveryList(data=found))
        return
    for d in found:
        last = d.attempts[-1] if d.attempts else None
        answer = "-" if last is None else last.error or str(last.status_code)
        typer.echo(f"{d.id:<8} {d.event_type.value:<10} {d.state.value:<9} {len(d.attempts)} tries  {answer}  {d.url}")


@app.command("logs")
def logs(
    ctx: typer.Context,
    run_id: RunId,
    attempt: Annotated[int | None, typer.Option(min=1, help="Attempt number (default: the current one)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"run_id", "attempt", "logs"} as JSON')] = False,
    follow_lines: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Print new lines as the op writes them until the run ends (--json: one line each)"
        ),
    ] = False,
) -> None:
    """The captured stdout/stderr of an attempt, as plain text; with -f, live, of every attempt unless --attempt."""
    if follow_lines:
        with api(ctx) as client, detachable(run_id):
            follow_logs(client, run_id, attempt, as_json)
        return
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
    timeout: TimeoutOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print each event as one JSON line")] = False,
) -> None:
    """Follow a run live (state changes, why it waits, progress, INFO lines) until it ends; exit 1 if it failed or
    was cancelled."""

    def event(e: Event) -> None:
        typer.echo(render.json_line(e) if as_json else render.event_line(e))

    def status(run: OpRun, text: str) -> None:
        typer.echo(render.status_line(run, text), err=as_json)

    with api(ctx) as client, detachable(run_id):
        final = follow(client, run_id, event, status, timeout)
    if not as_json:
        if final.state == RunState.COMPLETED:
            typer.echo(f"outputs: {json.dumps(final.outputs)}")
        else:
            typer.echo(f"{final.state.value}: {final.state_reason.code.value}: {final.state_reason.message}")
    exit_for(final)
