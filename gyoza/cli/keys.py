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


QUOTA_HELP = "submit role: what its runs may hold at once, e.g. gpus=8,vram_mb=160000,cpu=64,ram_mb=256000,weight=2"


def _quota(text: str) -> dict[str, str]:
    """``gpus=8,cpu=16`` as the quota's fields (the server checks the names and numbers, naming what is wrong)."""
    fields = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise typer.BadParameter(f"{part!r}: expected <field>=<number>, e.g. gpus=8")
        fields[name.strip()] = value.strip()
    return fields


def _numbers(fields: dict[str, str]) -> dict[str, float]:
    try:
        return {name: float(value) if "." in value else int(value) for name, value in fields.items()}
    except ValueError:
        raise typer.BadParameter(f"quota values are numbers: {fields}") from None


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
    quota: Annotated[str | None, typer.Option("--quota", help=QUOTA_HELP)] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print its token: it is shown this once (only its hash is stored)."""
    names = None if definitions is None else [d.strip() for d in definitions.split(",") if d.strip()]
    with api(ctx) as client:
        created = client.create_key(name, role, names, worker_id, None if quota is None else _numbers(_quota(quota)))
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


@app.command("quota")
def set_quota(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The submit key's id")],
    quota: Annotated[str, typer.Argument(help=QUOTA_HELP + "; none lifts it")],
    as_json: JsonOption = False,
) -> None:
    """Set, change or lift (none) a submit key's quota; runs over it wait with QUOTA_EXCEEDED."""
    fields = None if quota.strip().lower() == "none" else _numbers(_quota(quota))
    with api(ctx) as client:
        key = client.set_quota(key_id, fields)
    if as_json:
        render.print_json(key)
    else:
        typer.echo(f"key {key.id}: quota {'none' if key.quota is None else _describe(key.quota.model_dump())}")


def _describe(quota: dict[str, object]) -> str:
    return ", ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in quota.items() if value is not None)  # fmt: skip


@app.command("revoke")
def revoke_key(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id (gyz_<id>_...)")]) -> None:
    """Revoke a key: every server refuses it within a second."""
    with api(ctx) as client:
        client.revoke_key(key_id)
    typer.echo(f"revoked key {key_id}")
