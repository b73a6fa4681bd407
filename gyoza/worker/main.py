"""Build a worker from its settings and run it until SIGTERM/SIGINT (then drain; a second signal: stop at once)."""

from __future__ import annotations

import asyncio
import logging

from pydantic import TypeAdapter, ValidationError

from gyoza.bus import names
from gyoza.bus.messaging import WorkerLink
from gyoza.client import AsyncGyozaClient
from gyoza.errors import GyozaError
from gyoza.processes import Shutdown, shutdown_on_signals
from gyoza.schema import Assignment, WorkerCommand, WorkerResources
from gyoza.worker.agent import AssignmentSource, WorkerAgent
from gyoza.worker.natslink import NatsReports
from gyoza.worker.resources import detect_resources
from gyoza.worker.runtimes.base import Runtime
from gyoza.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

SAFETY_CLAIM_EVERY_S = 10.0
_MESSAGE = TypeAdapter(Assignment | WorkerCommand)


def build_runtime(settings: WorkerSettings) -> Runtime:
    if settings.runtime == "process":
        from gyoza.worker.runtimes.process import ProcessRuntime

        return ProcessRuntime()
    from gyoza.worker.runtimes.docker import DockerRuntime

    return DockerRuntime(network=settings.network, pull=settings.pull)


def run_worker(settings: WorkerSettings) -> None:
    asyncio.run(_run_until_signalled(settings))


async def _run_until_signalled(settings: WorkerSettings) -> None:
    await work(settings, shutdown_on_signals())


async def work(settings: WorkerSettings, shutdown: Shutdown) -> None:
    """Run the worker until a shutdown is requested, then drain (see ``gyoza.worker.agent``)."""
    if not settings.api_key:
        raise SystemExit("a worker needs an API key (GYOZA_API_KEY)")
    if settings.mode == "nats" and not settings.nats_url:
        raise SystemExit("--mode nats needs GYOZA_NATS_URL")
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    resources = detect_resources(settings.cpu, settings.ram_mb, settings.gpus)
    log.info("worker %s: cpu %g, ram %d MB, GPUs %s", settings.name, resources.cpu, resources.ram_mb,
             [g.index for g in resources.gpus] or "none")  # fmt: skip
    async with AsyncGyozaClient(settings.server_url, settings.api_key) as client:
        if settings.nats_url and settings.mode == "nats":
            await _work_over_nats(settings, shutdown, client, resources)
            return
        await WorkerAgent(settings, resources, client, build_runtime(settings)).run(shutdown)


async def _work_over_nats(
    settings: WorkerSettings, shutdown: Shutdown, client: AsyncGyozaClient, resources: WorkerResources
) -> None:
    """NATS mode: assignments arrive on the worker's subject, events and heartbeats go as NATS requests (logs and the
    safety claim over REST). The connection outlives the agent: a drain still reports over it."""
    assert settings.nats_url is not None
    try:
        link = await WorkerLink.open(settings.nats_url, str(settings.nats_creds) if settings.nats_creds else None,
                                     f"gyoza-worker-{settings.name}")  # fmt: skip
    except GyozaError as exc:
        raise SystemExit(f"cannot connect to NATS at {settings.nats_url}: {exc.message}") from None
    try:
        agent = WorkerAgent(
            settings, resources, client, build_runtime(settings), NatsReports(link, client, settings.name)
        )
        await agent.run(shutdown, _nats_source(link))
    finally:
        await link.close()


def _nats_source(link: WorkerLink) -> AssignmentSource:
    """Assignments and cancels arrive on ``gyoza.workers.<id>.assignments``; a slow claim poll is the safety net for a
    message sent while this worker was not yet subscribed."""

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

        subscription = await link.listen(names.assignments_subject(agent.settings.name), on_message)
        try:
            while True:
                for assignment in (await agent.client.claim(agent.settings.name, wait=0)).data:
                    agent.accept(assignment)
                await asyncio.sleep(SAFETY_CLAIM_EVERY_S)
        finally:
            await subscription.stop()

    return source
