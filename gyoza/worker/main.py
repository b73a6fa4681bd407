"""Build a worker from its options and run it until SIGTERM/SIGINT (then drain; a second signal: stop at once)."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from gyoza.bus import messaging, names
from gyoza.client import AsyncGyozaClient
from gyoza.processes import Shutdown, shutdown_on_signals
from gyoza.schema import Assignment, WorkerCommand
from gyoza.worker.agent import AgentSettings, AssignmentSource, WorkerAgent, claim_loop
from gyoza.worker.attempt import AttemptSettings
from gyoza.worker.iocontract import CONTAINER_IO_DIR
from gyoza.worker.resources import detect_resources
from gyoza.worker.runtimes.base import DEFAULT_LOG_LIMIT, Runtime

log = logging.getLogger(__name__)

SAFETY_CLAIM_EVERY_S = 10.0
_MESSAGE = TypeAdapter(Assignment | WorkerCommand)


@dataclass(frozen=True)
class WorkerOptions:
    server_url: str
    api_key: str
    work_dir: Path
    name: str | None = None
    tags: tuple[str, ...] = ()
    cpu: float | None = None
    ram_mb: int | None = None
    gpus: str = "auto"
    mode: str = "rest"
    runtime: str = "docker"
    pull: str = "if-missing"
    network: str = "bridge"
    heartbeat_interval: float = 2.0
    stop_grace_s: float = 10.0
    drain_timeout_s: float | None = None
    log_limit: int = DEFAULT_LOG_LIMIT
    nats_url: str | None = None
    nats_creds: str | None = None


def build_runtime(options: WorkerOptions) -> Runtime:
    if options.runtime == "process":
        from gyoza.worker.runtimes.process import ProcessRuntime

        return ProcessRuntime()
    from gyoza.worker.runtimes.docker import DockerRuntime

    return DockerRuntime(network=options.network, pull=options.pull)


def run_worker(options: WorkerOptions) -> None:
    asyncio.run(_run_until_signalled(options))


async def _run_until_signalled(options: WorkerOptions) -> None:
    await work(options, shutdown_on_signals())


async def work(options: WorkerOptions, shutdown: Shutdown) -> None:
    """Run the worker until a shutdown is requested, then drain (see ``gyoza.worker.agent``)."""
    worker_id = options.name or socket.gethostname()
    options.work_dir.mkdir(parents=True, exist_ok=True)
    resources = detect_resources(options.cpu, options.ram_mb, options.gpus)
    log.info("worker %s: cpu %g, ram %d MB, GPUs %s", worker_id, resources.cpu, resources.ram_mb,
             [g.index for g in resources.gpus] or "none")  # fmt: skip
    settings = AgentSettings(
        worker_id=worker_id, tags=list(options.tags), resources=resources,
        heartbeat_interval_s=options.heartbeat_interval, drain_timeout_s=options.drain_timeout_s,
    )  # fmt: skip
    attempts = AttemptSettings(
        worker_id=worker_id, work_dir=options.work_dir.resolve(), stop_grace_s=options.stop_grace_s,
        log_limit=options.log_limit, container_io_dir=CONTAINER_IO_DIR if options.runtime == "docker" else None,
    )  # fmt: skip
    async with AsyncGyozaClient(options.server_url, options.api_key) as client:
        agent = WorkerAgent(settings, attempts, client, build_runtime(options))
        source: AssignmentSource = claim_loop
        if options.mode == "nats":
            if not options.nats_url:
                raise SystemExit("--mode nats needs GYOZA_NATS_URL")
            source = _nats_source(options.nats_url, options.nats_creds)
        await agent.run(shutdown, source)


def _nats_source(url: str, creds: str | None) -> AssignmentSource:
    """NATS mode: assignments and cancels arrive on ``gyoza.workers.<id>.assignments``; a slow claim poll is the
    safety net for a message sent while this worker was not yet subscribed."""

    async def source(agent: WorkerAgent) -> None:
        async def on_message(data: bytes) -> None:
            try:
                message = _MESSAGE.validate_json(data)
            except ValidationError:
                log.warning("ignoring an unreadable assignment message")
                return
            if isinstance(message, Assignment):
                agent.accept(message)
            else:
                agent.apply(message)

        subscription = await messaging.listen(url, creds, names.assignments_subject(agent.settings.worker_id),
                                              on_message)  # fmt: skip
        try:
            while True:
                for assignment in (await agent.client.claim(agent.settings.worker_id, wait=0)).data:
                    agent.accept(assignment)
                await asyncio.sleep(SAFETY_CLAIM_EVERY_S)
        finally:
            await subscription.stop()

    return source
