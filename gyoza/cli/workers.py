"""``gyoza workers list``."""

from __future__ import annotations

from typing import Annotated

import typer

from gyoza.cli import render
from gyoza.cli.errors import api

app = typer.Typer(no_args_is_help=True, help="Inspect the worker fleet.")


@app.command("list")
def list_workers(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table")] = False,
) -> None:
    """Every worker the server knows: status, free/total resources, running runs, last heartbeat."""
    with api(ctx) as client:
        workers = client.list_workers()
    if as_json:
        render.print_json({"data": workers})
    else:
        render.console().print(render.workers_table(workers))
