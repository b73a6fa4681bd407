"""``gyoza run NAME --inputs-file runs.jsonl [--wait]`` and ``gyoza batches get ID``.

The file is checked whole against the definition's input specs before anything is sent, so a bad line (named by
its number) creates no run at all; then the runs go in batches of ``BATCH_SIZE``, and ``--wait`` follows them all
with one progress bar.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from gyoza.cli import render
from gyoza.cli.errors import EXIT_INTERRUPTED, EXIT_RUN_FAILED, EXIT_TIMEOUT, api, fail
from gyoza.client import GyozaClient
from gyoza.core.specs import resolve_inputs
from gyoza.schema import BatchView, InputSpec, OpRun, RunState

BATCH_SIZE = 500
POLL_S = 0.5

app = typer.Typer(no_args_is_help=True, help="Follow batches of runs.")


def read_inputs_file(path: Path, specs: dict[str, InputSpec]) -> list[dict[str, Any]]:
    """One JSON object of inputs per line (blank lines skipped), each checked against the specs; every problem is
    named by its line, and any problem is a usage error (exit 2) before a single run is created."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="'--inputs-file'") from None
    items: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg})")
            continue
        if not isinstance(value, dict):
            problems.append(f"line {number}: expected a JSON object of inputs, got {type(value).__name__}")
            continue
        _, wrong = resolve_inputs(value, specs)
        problems += [f"line {number}: {p['field']}: {p['problem']}" for p in wrong]
        items.append(value)
    if not items and not problems:
        problems.append("no inputs: the file holds no line")
    if problems:
        raise typer.BadParameter("\n  " + "\n  ".join(problems), param_hint="'--inputs-file'")
    return items


def run_batch(
    ctx: typer.Context, name: str, path: Path, priority: int | None, version: str | None, wait: bool,
    timeout: float | None, as_json: bool,
) -> None:  # fmt: skip
    """Create a run per line of ``path``; print their ids (or JSON), or with ``--wait`` follow them to the end."""
    with api(ctx) as client:
        definition = client.get_definition(name, version)
        items = read_inputs_file(path, definition.input_specs)
        runs: list[OpRun] = []
        batch_ids: list[str] = []
        for start in range(0, len(items), BATCH_SIZE):
            # Pin the version whose specs checked the file, so a concurrent deploy cannot change their meaning.
            batch = client.create_runs(
                name, items[start : start + BATCH_SIZE], priority=priority, version=definition.version
            )
            runs += batch.data
            batch_ids += [batch.batch_id] if batch.batch_id else []
        typer.echo(f"{len(runs)} runs of {name} in batch {', '.join(batch_ids)}", err=True)
        if not wait:
            if as_json:
                render.print_json_list(runs)
            else:
                typer.echo("\n".join(run.id for run in runs))
                typer.echo(f"follow them with: gyoza batches get {batch_ids[0]}", err=True)
            return
        views = follow_batches(client, batch_ids, timeout)
        finals = {run.id: run for batch_id in batch_ids for run in client.iter_runs(batch_id=batch_id, limit=100)}
    ordered = [finals.get(run.id, run) for run in runs]
    if as_json:
        render.print_json_list(ordered)
    else:
        for run in ordered:
            typer.echo(json.dumps({"id": run.id, "state": run.state.value, "outputs": run.outputs}))
    failed = sum(view.counts.get(RunState.FAILED, 0) + view.counts.get(RunState.CANCELLED, 0) for view in views)
    if failed:
        typer.secho(f"{failed} of {len(runs)} runs did not complete", err=True, fg="red")
        raise typer.Exit(EXIT_RUN_FAILED)


def follow_batches(client: GyozaClient, batch_ids: list[str], timeout: float | None) -> list[BatchView]:
    """One progress bar on stderr for every run of the batches, until all are finished; exit 4 after ``timeout``.
    Ctrl-C or the timeout stop the waiting, never the runs."""
    deadline = None if timeout is None else time.monotonic() + timeout
    hint = f"gyoza batches get {batch_ids[0]}"
    try:
        with render.progress_bar() as bar:
            task = bar.add_task("runs", total=100)
            while True:
                views = [client.get_batch(batch_id) for batch_id in batch_ids]
                total = sum(view.total for view in views)
                done = sum(view.progress * view.total for view in views) / max(total, 1)
                bar.update(task, completed=done, description=batch_status(views))
                if sum(view.finished for view in views) == total:
                    return views
                if deadline is not None and time.monotonic() >= deadline:
                    raise fail(
                        f"timed out after {timeout:g} s: {batch_status(views)}; the runs continue ({hint})",
                        EXIT_TIMEOUT,
                    )
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        raise fail(f"detached; the runs continue on the server ({hint})", EXIT_INTERRUPTED) from None


def batch_status(views: list[BatchView]) -> str:
    """``3 pending, 2 running, 5 completed``: the states that hold runs, in state-machine order."""
    counts = {state: sum(view.counts.get(state, 0) for view in views) for state in RunState}
    return ", ".join(f"{n} {state.value.lower()}" for state, n in counts.items() if n) or "no runs"


@app.command("get")
def get_batch(
    ctx: typer.Context,
    batch_id: Annotated[str, typer.Argument(help="Batch id (printed by gyoza run --inputs-file)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON (nothing else on stdout)")] = False,
) -> None:
    """A batch's runs counted by state, and its progress."""
    with api(ctx) as client:
        view = client.get_batch(batch_id)
    if as_json:
        render.print_json(view)
        return
    typer.echo(f"batch {view.id}: {view.total} runs, {view.finished} finished, {view.progress:g}% done")
    typer.echo(batch_status([view]))
