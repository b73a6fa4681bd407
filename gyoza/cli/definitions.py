"""``gyoza definitions list|get``."""

from __future__ import annotations

from typing import Annotated

import typer

from gyoza.cli import render
from gyoza.cli.errors import api

app = typer.Typer(no_args_is_help=True, help="Inspect deployed op definitions.")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table")]


@app.command("list")
def list_definitions(
    ctx: typer.Context,
    all_versions: Annotated[bool, typer.Option("--all-versions", help="Every version, not only the latest")] = False,
    as_json: JsonFlag = False,
) -> None:
    """The latest version of every definition (or all versions)."""
    with api(ctx) as client:
        definitions = client.list_definitions(all_versions)
    if as_json:
        render.print_json({"data": definitions})
    else:
        render.console().print(render.definitions_table(definitions))


@app.command("get")
def get_definition(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Definition name")],
    version: Annotated[str | None, typer.Option(help="A specific version (default: the latest)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """One definition: image, inputs, outputs, constraints."""
    with api(ctx) as client:
        definition = client.get_definition(name, version)
    if as_json:
        render.print_json(definition)
    else:
        render.console().print(render.definition_detail(definition))
