"""``gyoza secrets set|list|delete`` and ``gyoza secrets registry-login|registries|registry-logout``: secrets and
registry pull credentials (admin only; docs/secrets.md). A value is read from stdin or a prompt, never an argument,
so it stays out of shell history and process listings."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.table import Table

from gyoza.cli import render
from gyoza.cli.errors import api

app = typer.Typer(no_args_is_help=True, help="Set, list and delete secrets and registry logins (admin key needed).")

JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of text")]


def _read_value(what: str) -> str:
    """The value piped in (its last newline dropped), or typed at a hidden prompt."""
    if sys.stdin.isatty():
        value: str = typer.prompt(what, hide_input=True)
        return value
    return sys.stdin.read().removesuffix("\n")


def _table(columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


@app.command("set")
def set_secret(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The secret's name")]) -> None:
    """Store a secret (value from stdin, e.g. `gyoza secrets set db-password < pw.txt`, or a hidden prompt).
    Definitions use it with `secrets: {DB_PASSWORD: db-password}`."""
    value = _read_value(f"value of {name}")
    with api(ctx) as client:
        client.set_secret(name, value)
    typer.echo(f"set secret {name}")


@app.command("list")
def list_secrets(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every secret's name and when it was set (never a value)."""
    with api(ctx) as client:
        secrets = client.list_secrets()
    if as_json:
        render.print_json({"data": secrets})
        return
    rows = [(s.name, render.when(s.created_at), render.when(s.updated_at)) for s in secrets]
    render.console().print(_table(("NAME", "CREATED", "UPDATED"), rows))


@app.command("delete")
def delete_secret(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The secret's name")]) -> None:
    """Delete a secret: runs that need it fail when assigned, naming it."""
    with api(ctx) as client:
        client.delete_secret(name)
    typer.echo(f"deleted secret {name}")


@app.command("registry-login")
def registry_login(
    ctx: typer.Context,
    registry: Annotated[str, typer.Argument(help="ghcr.io, registry.example:5000, or docker.io for Docker Hub")],
    username: Annotated[str, typer.Option("--username", "-u", help="The registry user")],
) -> None:
    """Store the login workers pull this registry's images with (password from stdin or a hidden prompt)."""
    password = _read_value(f"password for {username}@{registry}")
    with api(ctx) as client:
        client.set_registry(registry, username, password)
    typer.echo(f"stored the login for {registry}")


@app.command("registries")
def list_registries(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every registry with a stored login, and its user (never a password)."""
    with api(ctx) as client:
        registries = client.list_registries()
    if as_json:
        render.print_json({"data": registries})
        return
    rows = [(r.registry, r.username, render.when(r.updated_at)) for r in registries]
    render.console().print(_table(("REGISTRY", "USERNAME", "UPDATED"), rows))


@app.command("registry-logout")
def registry_logout(ctx: typer.Context, registry: Annotated[str, typer.Argument(help="The registry")]) -> None:
    """Forget a registry's login: its images are pulled anonymously again."""
    with api(ctx) as client:
        client.delete_registry(registry)
    typer.echo(f"forgot the login for {registry}")
