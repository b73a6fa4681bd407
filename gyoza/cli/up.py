"""``gyoza up``: a whole local cluster in one process — embedded NATS, the server and one worker.

It claims the data dir and binds the port before anything starts, and says "up" only once the server answers. On
Ctrl-C (or SIGTERM) it stops in order: the worker drains first — no new work, running ops finish and their reports
land, for up to ``--drain-timeout`` seconds, after which the ops still running are stopped and reported lost (so they
are retried) — and only then do the server and NATS stop. A second Ctrl-C stops at once and lists what it left.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from gyoza.settings import Settings, read_config_file, write_config_file

if TYPE_CHECKING:
    from gyoza.worker.main import WorkerOptions


def docker_reachable() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def up(port: int | None, data_dir: Path | None, runtime: str | None, network: str, drain_timeout: float) -> None:
    from gyoza.datadir import DataDirInUse
    from gyoza.processes import configure_logging
    from gyoza.server.serve import CannotListen
    from gyoza.worker.main import WorkerOptions

    base = Settings.load(port=port, data_dir=data_dir)
    # Reuse the key this data dir was given before (clients keep working across restarts); env/flags still win.
    api_key = base.api_key or read_config_file(base.data_dir).get("api_key") or secrets.token_urlsafe(24)
    url = f"http://{'127.0.0.1' if base.host in ('0.0.0.0', '::') else base.host}:{base.port}"
    settings = base.model_copy(update={"api_key": api_key, "server_url": url, "nats_url": None})
    if runtime is None:
        runtime = "docker" if docker_reachable() else "process"
        if runtime == "process":
            typer.secho(
                "No Docker engine reachable: the local worker uses the process runtime (ops run as plain, "
                "unisolated subprocesses; definitions need a command).", fg="yellow", err=True,
            )  # fmt: skip
    worker = WorkerOptions(
        server_url=url, api_key=api_key, work_dir=settings.data_dir / "work", name="local", runtime=runtime,
        network=network, heartbeat_interval=settings.heartbeat_interval, drain_timeout_s=drain_timeout,
    )  # fmt: skip
    configure_logging(settings.log_level)
    try:
        asyncio.run(_run(settings, worker))
    except (DataDirInUse, CannotListen) as exc:
        typer.secho(f"gyoza up: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None


async def _run(settings: Settings, worker: WorkerOptions) -> None:
    from gyoza.processes import Shutdown, shutdown_on_signals
    from gyoza.server.serve import serve
    from gyoza.worker.main import work

    def tell(shutdown: Shutdown) -> None:
        if shutdown.urgent.is_set():
            typer.secho("Stopping at once.", fg="yellow", err=True)
        else:
            message = f"Stopping: the worker finishes its running ops first (up to {worker.drain_timeout_s:g} s), " \
                      "then the server and NATS stop. Ctrl-C again to stop at once."  # fmt: skip
            typer.secho(message, fg="yellow", err=True)

    shutdown = shutdown_on_signals(tell)
    server_stop, ready = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(serve(settings, server_stop, ready))
    await _first(server, ready.wait(), shutdown.requested.wait())
    if server.done():
        await server  # it failed to start: raise why
    if not ready.is_set():  # Ctrl-C while starting
        server_stop.set()
        await server
        return
    config_path = write_config_file(settings.data_dir, worker.server_url, worker.api_key)
    typer.secho(f"Gyoza is up at {worker.server_url}", fg="green", bold=True)
    typer.echo(f"API key: {worker.api_key}   (saved with the URL in {config_path}; the CLI and SDK read it)")
    typer.echo(f"Worker 'local' uses the {worker.runtime} runtime. Ctrl-C stops everything.")
    local_worker = asyncio.create_task(work(worker, shutdown))
    await _first(server, local_worker, shutdown.requested.wait())
    if server.done():  # the server failed while running: nothing can take the worker's reports any more
        shutdown.requested.set()
        shutdown.urgent.set()
    try:
        await local_worker  # drains while the server still takes its reports
    finally:
        server_stop.set()
        await server


async def _first(*waits: Awaitable[object]) -> None:
    """Wait until the first of these is done; the tasks among them keep running, the coroutines are cancelled."""
    futures = [asyncio.ensure_future(w) for w in waits]
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    for future, given in zip(futures, waits, strict=True):
        if future is not given:
            future.cancel()
