"""``gyoza`` entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import gyoza
from gyoza.cli import batches, definitions, keys, op, runs, secrets, topics, worker, workers
from gyoza.cli.errors import Connection

# Plain (click-style) help: typer's rich help panel prints a "<bool>" type after every flag, as if it took a value.
app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Gyoza: run containerised ops on a cluster of GPU/CPU workers."
)
server_app = typer.Typer(no_args_is_help=True, help="Run the Gyoza server.")
app.add_typer(server_app, name="server")
app.add_typer(worker.app, name="worker")
app.add_typer(op.app, name="op")
app.command("deploy")(op.deploy)
app.add_typer(definitions.app, name="definitions")
app.command("run")(runs.run)
app.add_typer(runs.app, name="runs")
app.add_typer(batches.app, name="batches")
app.add_typer(workers.app, name="workers")
app.add_typer(topics.app, name="topics")
app.add_typer(keys.app, name="keys")
app.add_typer(secrets.app, name="secrets")


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"gyoza {gyoza.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    server: Annotated[
        str | None, typer.Option(help="Server URL [env GYOZA_SERVER_URL, then gyoza up's config]")
    ] = None,
    api_key: Annotated[str | None, typer.Option(help="API key [env GYOZA_API_KEY, then gyoza up's config]")] = None,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit")
    ] = False,
) -> None:
    """Gyoza: run containerised ops on a cluster of GPU/CPU workers."""
    # Commands that talk to the API read these through gyoza.cli.errors.api(ctx).
    ctx.obj = Connection(server, api_key)


@server_app.command("start")
def server_start(
    host: Annotated[str | None, typer.Option(help="Address to listen on [env GYOZA_HOST, default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env GYOZA_PORT, default 5555]")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key clients must send [env GYOZA_API_KEY]")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory [env GYOZA_DATA_DIR, default ~/.gyoza]")] = None,
    nats_url: Annotated[
        str | None, typer.Option(help="NATS cluster URL; unset runs an embedded nats-server [env GYOZA_NATS_URL]")
    ] = None,
    nats_creds: Annotated[Path | None, typer.Option(help="NATS credentials file [env GYOZA_NATS_CREDS]")] = None,
    log_level: Annotated[str | None, typer.Option(help="Log level [env GYOZA_LOG_LEVEL, default info]")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Server processes sharing the port and one NATS [env GYOZA_SERVER_WORKERS, default: one per "
            "usable core]",
        ),
    ] = None,
) -> None:
    """Start the REST server (and the embedded NATS server unless GYOZA_NATS_URL is set)."""
    from pydantic import ValidationError

    from gyoza.server.serve import run_server
    from gyoza.settings import Settings

    try:
        settings = Settings.load(
            host=host, port=port, api_key=api_key, data_dir=data_dir, nats_url=nats_url, nats_creds=nats_creds,
            log_level=log_level, server_workers=workers,
        )  # fmt: skip
    except ValidationError as exc:
        typer.echo(f"invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None
    if not settings.api_key:
        typer.echo("refusing to start without an API key: set GYOZA_API_KEY or pass --api-key", err=True)
        raise typer.Exit(2)
    run_server(settings)


@app.command("up")
def up_command(
    port: Annotated[int | None, typer.Option(help="Port [env GYOZA_PORT, default 5555]")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory [env GYOZA_DATA_DIR, default ~/.gyoza]")] = None,
    runtime: Annotated[
        str | None, typer.Option(help="Worker runtime: docker or process [default: docker if an engine answers]")
    ] = None,
    network: Annotated[str, typer.Option(help="Docker network for op containers")] = "bridge",
    drain_timeout: Annotated[
        float,
        typer.Option(
            help="On Ctrl-C, seconds running ops may take to finish before they are stopped and retried; "
            "a second Ctrl-C stops at once"
        ),
    ] = 30.0,
) -> None:
    """Start a local cluster in one command: embedded NATS, the server and one worker."""
    from gyoza.cli.up import up

    if runtime not in (None, "docker", "process"):
        raise typer.BadParameter("must be docker or process", param_hint="--runtime")
    up(port, data_dir, runtime, network, drain_timeout)


def main() -> None:
    app()
