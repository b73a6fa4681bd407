"""How the CLI shows things: rich tables and lines for people, plain JSON for scripts.

Tables and results go to stdout; live status (progress bars, hints) goes to stderr, so ``> file`` keeps only results.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from gyoza.schema import TERMINAL_STATES, Event, OpDefinition, OpRun, RunState, TopicEvent, WorkerView

# Piped output keeps whole ids instead of wrapping them at rich's default 80 columns.
_PIPE_WIDTH = 240


def console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=_PIPE_WIDTH)


def print_json(value: BaseModel | dict[str, Any]) -> None:
    """The API's JSON on stdout and nothing else: one indented document."""
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else {k: _plain(v) for k, v in value.items()}
    typer.echo(json.dumps(data, indent=2))


def print_json_list(items: Iterable[BaseModel]) -> None:
    """The API's list shape ``{"object": "list", "data": [...], "has_more": false}``, written as items arrive."""
    typer.echo('{"object": "list", "data": [', nl=False)
    for n, item in enumerate(items):
        typer.echo(("," if n else "") + "\n  " + item.model_dump_json(), nl=False)
    typer.echo('\n], "has_more": false}')


def json_line(value: BaseModel) -> str:
    """One compact JSON document per line (JSON Lines), for streams a script reads as they come."""
    return value.model_dump_json()


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def clock(moment: datetime) -> str:
    return moment.astimezone().strftime("%H:%M:%S")


_STATE_STYLE = {
    RunState.COMPLETED: "green", RunState.FAILED: "red", RunState.CANCELLED: "yellow", RunState.RUNNING: "cyan",
}  # fmt: skip


def state(value: RunState) -> Text:
    return Text(value.value, style=_STATE_STYLE.get(value, ""))


def _row(table: Table, *cells: str | Text) -> None:
    # Text cells: names, messages and descriptions are shown as typed, never interpreted as rich markup.
    table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column in ("ID", "RUN"), overflow="fold")
    return table


def definitions_table(definitions: Iterable[OpDefinition]) -> Table:
    table = _table("NAME", "VERSION", "IMAGE", "INPUTS", "CREATED", "DESCRIPTION")
    for d in definitions:
        inputs = ", ".join(f"{name}:{spec.type.value}" for name, spec in d.input_specs.items())
        _row(table, d.name, d.version, d.image, inputs or "-", when(d.created_at), d.description)
    return table


def definition_detail(d: OpDefinition) -> Table:
    table = _table("FIELD", "VALUE")
    _row(table, "name", d.name)
    _row(table, "version", d.version)
    _row(table, "image", d.image)
    _row(table, "command", " ".join(d.command) if d.command else "-")
    _row(table, "description", d.description or "-")
    _row(table, "created", when(d.created_at))
    for name, spec in d.input_specs.items():
        extra = "" if spec.required else f" (optional, default {json.dumps(spec.default)})"
        _row(table, f"input {name}", f"{spec.type.value}{extra} {spec.description}".rstrip())
    for name, out in (d.output_specs or {}).items():
        _row(table, f"output {name}", out.type.value)
    c = d.constraints
    _row(table, "constraints", f"cpu={c.cpu} ram_mb={c.ram_mb} vram_mb={c.vram_mb} gpus={c.gpus}")
    _row(table, "tags", ", ".join(d.tags) or "-")
    if d.event_delivery:
        _row(table, "topic", d.event_delivery.topic)
    return table


def run_op(run: OpRun) -> str:
    return f"{run.op_definition}:{run.definition_version}" if run.op_definition else run.image


CANCEL_PENDING = "cancel requested, waiting for the worker to stop it"


def cancel_pending(run: OpRun) -> bool:
    """A cancel was asked for but the worker has not stopped the run yet (it is still RUNNING)."""
    return run.cancel_requested and run.state not in TERMINAL_STATES


def waiting_status(run: OpRun) -> str:
    """What someone waiting on an unfinished run should know: a pending cancel, or why it is not placed yet."""
    if cancel_pending(run):
        return CANCEL_PENDING
    if run.state == RunState.PENDING:
        return f"{run.state_reason.code.value}: {run.state_reason.message}"
    return ""


def run_state(run: OpRun) -> Text:
    return state(run.state) + (" (cancel requested)" if cancel_pending(run) else "")


def runs_table(runs: Iterable[OpRun]) -> Table:
    table = _table("ID", "OP", "STATE", "REASON", "PROGRESS", "ATTEMPT", "WORKER", "CREATED")
    for r in runs:
        _row(
            table, r.id, run_op(r), run_state(r), r.state_reason.code.value, f"{r.progress}%", str(r.current_attempt),
            r.worker_id or "-", when(r.created_at),
        )  # fmt: skip
    return table


def run_detail(run: OpRun) -> Table:
    table = _table("FIELD", "VALUE")
    _row(table, "id", run.id)
    _row(table, "op", run_op(run))
    _row(table, "state", state(run.state) + f" ({run.state_reason.code.value}) {run.state_reason.message}")
    if cancel_pending(run):
        _row(table, "cancel", CANCEL_PENDING)
    _row(table, "progress", f"{run.progress}%")
    _row(table, "attempt", str(run.current_attempt))
    _row(table, "priority", str(run.priority))
    _row(table, "worker", run.worker_id or "-")
    _row(table, "inputs", json.dumps(run.inputs))
    _row(table, "outputs", json.dumps(run.outputs))
    _row(table, "created", when(run.created_at))
    _row(table, "started", when(run.started_at))
    _row(table, "finished", when(run.finished_at))
    return table


def workers_table(workers: Iterable[WorkerView]) -> Table:
    table = _table("ID", "STATUS", "CPU FREE/TOTAL", "RAM MB FREE/TOTAL", "GPUS", "RUNNING", "WARM (IDLE)", "TAGS",
                   "LAST HEARTBEAT")  # fmt: skip
    for w in workers:
        idle = sum(1 for instance in w.warm if not instance.busy)
        _row(
            table, w.id, w.status.value, f"{w.free.cpu:g}/{w.totals.cpu:g}", f"{w.free.ram_mb}/{w.totals.ram_mb}",
            str(len(w.gpus)), str(len(w.running)), f"{len(w.warm)} ({idle})" if w.warm else "-",
            ", ".join(w.tags) or "-", when(w.last_heartbeat),
        )  # fmt: skip
    return table


def status_line(run: OpRun, status: str) -> str:
    """A change in why the run waits, aligned with ``event_line``: now, attempt, state and the status."""
    return f"{clock(datetime.now(UTC))}  #{run.current_attempt} {run.state.value:<10} {status}"


def event_line(event: Event) -> str:
    """One run event for people: time, attempt, type, message and the state it left the run in."""
    msg = f"{event.msg}%" if event.type.value == "PROGRESS" else str(event.msg)
    return f"{clock(event.t)}  #{event.attempt} {event.type.value:<10} {msg}  -> {event.state.value}"


def topic_events_table(events: Iterable[TopicEvent]) -> Table:
    table = _table("CURSOR", "RUN", "ATTEMPT", "TYPE", "STATE", "MSG", "TIME")
    for e in events:
        _row(table, str(e.cursor), e.run_id, str(e.attempt), e.type.value, e.state.value, str(e.msg), when(e.t))
    return table


def topic_event_line(event: TopicEvent) -> str:
    return f"{event.cursor:>6}  {clock(event.t)}  {event.run_id}  #{event.attempt} {event.type.value:<10} {event.msg}"


def progress_bar() -> Progress:
    """The live bar of a wait (one run or a whole batch), drawn on stderr so stdout stays for results."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console(stderr=True),
    )
