"""``gyoza worker start``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gyoza.processes import configure_logging

app = typer.Typer(no_args_is_help=True, help="Run a Gyoza worker on this machine.")
DRAIN_TIMEOUT_HELP = (
    "On SIGTERM, seconds running ops may take to finish before they are stopped and reported lost (default: no "
    "limit); a second SIGTERM stops at once"
)


@app.command("start")
def start(
    server: Annotated[str | None, typer.Option(help="Server URL [env GYOZA_SERVER_URL]")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key [env GYOZA_API_KEY]")] = None,
    name: Annotated[str | None, typer.Option(help="Worker id (default: the host name)")] = None,
    tags: Annotated[str, typer.Option(help="Comma-separated tags runs may require")] = "",
    cpu: Annotated[float | None, typer.Option(help="CPU cores to offer (default: detected)")] = None,
    ram_mb: Annotated[int | None, typer.Option(help="RAM in MiB to offer (default: detected)")] = None,
    gpus: Annotated[str, typer.Option(help="auto (nvidia-smi), none, or indices like 0,1")] = "auto",
    work_dir: Annotated[Path | None, typer.Option(help="Attempt directories [default: DATA_DIR/work]")] = None,
    mode: Annotated[str, typer.Option(help="rest (heartbeat + long-poll claim) or nats (subscribe)")] = "rest",
    runtime: Annotated[str, typer.Option(help="docker, or process (no isolation; dev only)")] = "docker",
    pull: Annotated[str, typer.Option(help="if-missing, always or never")] = "if-missing",
    network: Annotated[str, typer.Option(help="Docker network for op containers")] = "bridge",
    stop_grace: Annotated[float, typer.Option(help="Seconds between SIGTERM and kill on cancel")] = 10.0,
    drain_timeout: Annotated[float | None, typer.Option(help=DRAIN_TIMEOUT_HELP)] = None,
) -> None:
    """Start a worker: report resources, take assignments, run ops, report back."""
    from gyoza.settings import Settings
    from gyoza.worker.main import WorkerOptions, run_worker

    choices = {"mode": (mode, ("rest", "nats")), "runtime": (runtime, ("docker", "process")),
               "pull": (pull, ("if-missing", "always", "never"))}  # fmt: skip
    for option, (value, allowed) in choices.items():
        if value not in allowed:
            raise typer.BadParameter(f"must be one of {', '.join(allowed)}", param_hint=f"--{option}")
    settings = Settings.load(server_url=server, api_key=api_key)
    # Like the server: GYOZA_LOG_LEVEL (default info) applies, so what the worker does is visible in its output.
    configure_logging(settings.log_level)
    if not settings.api_key:
        typer.echo("an API key is required: set GYOZA_API_KEY or pass --api-key", err=True)
        raise typer.Exit(2)
    options = WorkerOptions(
            server_url=settings.server_url,
            api_key=settings.api_key,
            name=name,
            tags=tuple(t.strip() for t in tags.split(",") if t.strip()),
            cpu=cpu,
            ram_mb=ram_mb,
            gpus=gpus,
            work_dir=(work_dir or settings.data_dir / "work").expanduser(),
            mode=mode,
            runtime=runtime,
            pull=pull,
            network=network,
            heartbeat_interval=settings.heartbeat_interval,
            stop_grace_s=stop_grace,
            drain_timeout_s=drain_timeout,
            nats_url=settings.nats_url,
            nats_creds=str(settings.nats_creds) if settings.nats_creds else None,
        )  # fmt: skip
    run_worker(options)
