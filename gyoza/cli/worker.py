"""``gyoza worker start``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gyoza.processes import configure_logging

app = typer.Typer(no_args_is_help=True, help="Run a Gyoza worker on this machine.")
DRAIN_TIMEOUT_HELP = (
    "On SIGTERM, seconds running ops may take to finish before they are stopped and reported lost (default: no "
    "limit); a second SIGTERM stops at once [env GYOZA_WORKER_DRAIN_TIMEOUT]"
)


@app.command("start")
def start(
    server: Annotated[str | None, typer.Option(help="Server URL [env GYOZA_SERVER_URL]")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key [env GYOZA_API_KEY]")] = None,
    name: Annotated[str | None, typer.Option(help="Worker id [env GYOZA_WORKER_NAME; default: the host name]")] = None,
    tags: Annotated[
        str | None, typer.Option(help="Comma-separated tags runs may require [env GYOZA_WORKER_TAGS]")
    ] = None,
    cpu: Annotated[
        float | None, typer.Option(help="CPU cores to offer [env GYOZA_WORKER_CPU; default: detected]")
    ] = None,
    ram_mb: Annotated[
        int | None, typer.Option(help="RAM in MiB to offer [env GYOZA_WORKER_RAM_MB; default: detected]")
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(help="auto (nvidia-smi), none, or indices like 0,1 [env GYOZA_WORKER_GPUS; default: auto]"),
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="Attempt directories [env GYOZA_WORKER_WORK_DIR; default: DATA_DIR/work]")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            help="rest (heartbeat + long-poll claim) or nats (subscribe) [env GYOZA_WORKER_MODE; default: rest]"
        ),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(help="docker, or process (no isolation; dev only) [env GYOZA_WORKER_RUNTIME; default: docker]"),
    ] = None,
    pull: Annotated[
        str | None, typer.Option(help="if-missing, always or never [env GYOZA_WORKER_PULL; default: if-missing]")
    ] = None,
    network: Annotated[
        str | None, typer.Option(help="Docker network for op containers [env GYOZA_WORKER_NETWORK; default: bridge]")
    ] = None,
    stop_grace: Annotated[
        float | None,
        typer.Option(help="Seconds between SIGTERM and kill on cancel [env GYOZA_WORKER_STOP_GRACE; default: 10]"),
    ] = None,
    drain_timeout: Annotated[float | None, typer.Option(help=DRAIN_TIMEOUT_HELP)] = None,
) -> None:
    """Start a worker: report resources, take assignments, run ops, report back."""
    from pydantic import ValidationError

    from gyoza.settings import Settings
    from gyoza.worker.main import run_worker
    from gyoza.worker.settings import WORKER_ENV_PREFIX, WorkerSettings

    shared = Settings.load(server_url=server, api_key=api_key)
    # Like the server: GYOZA_LOG_LEVEL (default info) applies, so what the worker does is visible in its output.
    configure_logging(shared.log_level)
    if not shared.api_key:
        typer.echo("an API key is required: set GYOZA_API_KEY or pass --api-key", err=True)
        raise typer.Exit(2)
    try:
        settings = WorkerSettings.load(
            shared, name=name, tags=tags, cpu=cpu, ram_mb=ram_mb, gpus=gpus, work_dir=work_dir, mode=mode,
            runtime=runtime, pull=pull, network=network, stop_grace=stop_grace, drain_timeout=drain_timeout,
        )  # fmt: skip
    except ValidationError as exc:
        error = exc.errors()[0]
        option = str(error["loc"][0])
        hint = f"--{option.replace('_', '-')} (or {WORKER_ENV_PREFIX}{option.upper()})"
        raise typer.BadParameter(error["msg"], param_hint=hint) from None
    run_worker(settings)
