"""``gyoza keys create|list|revoke``: scoped API keys (admin only; docs/keys.md)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from gyoza.cli import render
from gyoza.cli.errors import api
from gyoza.schema import ApiKeyView, Role

app = typer.Typer(no_args_is_help=True, help="Create, list and revoke scoped API keys (admin key needed).")

JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of text")]


def _scope(key: ApiKeyView) -> str:
    if key.scope.worker_id is not None:
        return f"worker {key.scope.worker_id}"
    if key.scope.definitions is not None:
        return "definitions " + ",".join(key.scope.definitions)
    return "-"


def _keys_table(keys: list[ApiKeyView]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "NAME", "ROLE", "SCOPE", "CREATED", "REVOKED"):
        table.add_column(column)
    for k in keys:
        table.add_row(k.id, k.name, k.role.value, _scope(k), render.when(k.created_at), render.when(k.revoked_at))
    return table


@app.command("create")
def create_key(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A label: who or what holds the key")],
    role: Annotated[Role, typer.Option("--role", help="admin, submit, read or worker")],
    definitions: Annotated[
        str | None, typer.Option("--definitions", help="submit role: only these definitions (comma-separated)")
    ] = None,
    worker_id: Annotated[
        str | None, typer.Option("--worker-id", help="worker role (required): the worker it is")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print its token: it is shown this once (only its hash is stored)."""
    names = None if definitions is None else [d.strip() for d in definitions.split(",") if d.strip()]
    with api(ctx) as client:
        created = client.create_key(name, role, names, worker_id)
    if as_json:
        render.print_json(created)
        return
    render.console(stderr=True).print(f"created key {created.id} ({created.role.value}); the token is shown only now:")
    typer.echo(created.token)


@app.command("list")
def list_keys(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every key, revoked ones included (never a token)."""
    with api(ctx) as client:
        keys = client.list_keys()
    if as_json:
        render.print_json({"data": keys})
    else:
        render.console().print(_keys_table(keys))


@app.command("revoke")
def revoke_key(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id (gyz_<id>_...)")]) -> None:
    """Revoke a key: every server refuses it within a second."""
    with api(ctx) as client:
        client.revoke_key(key_id)
    typer.echo(f"revoked key {key_id}")
