"""``gyoza op init|build|test`` and ``gyoza deploy``: the gyoza.yml op workflow (SPEC §8)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Scaffold, build and test ops described by gyoza.yml.")


def deploy() -> None:
    """Validate gyoza.yml, build the image and upsert the definition."""
    raise typer.Exit(2)
