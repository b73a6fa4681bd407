"""``gyoza up``: a whole local cluster in one process — embedded NATS, the server and one worker."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import typer

from gyoza.settings import Settings, read_config_file, write_config_file


def docker_reachable() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def up(port: int | None, data_dir: Path | None, runtime: str | None, network: str) -> None:
    from gyoza.processes import configure_logging, stop_on_signals
    from gyoza.server.serve import serve
    from gyoza.worker.main import WorkerOptions, work

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
    config_path = write_config_file(settings.data_dir, url, api_key)
    worker = WorkerOptions(
        server_url=url, api_key=api_key, work_dir=settings.data_dir / "work", name="local", runtime=runtime,
        network=network, heartbeat_interval=settings.heartbeat_interval,
    )  # fmt: skip
    configure_logging(settings.log_level)

    async def main() -> None:
        stop, ready = stop_on_signals(), asyncio.Event()
        worker_stop = asyncio.Event()
        server = asyncio.create_task(serve(settings, stop, ready))
        await asyncio.wait({server, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            await server  # it failed to start: raise why
        typer.secho(f"Gyoza is up at {url}", fg="green", bold=True)
        typer.echo(f"API key: {api_key}   (saved with the URL in {config_path}; the CLI and SDK read it)")
        typer.echo(f"Worker 'local' uses the {runtime} runtime. Ctrl-C stops everything.")
        local_worker = asyncio.create_task(work(worker, worker_stop))
        await stop.wait()
        worker_stop.set()  # the worker drains first, while the server can still take its reports
        await local_worker
        await server

    asyncio.run(main())
