"""The Docker runtime (docker SDK, its blocking calls run in threads): one container per attempt.

Containers run with an init process (so SIGTERM reaches the op), the CPU quota and memory limit of the run's
constraints, only the assigned GPUs, the attempt directory at /gyoza, labels naming the run and attempt, the
configured network, and never privileged. ``container_options`` is pure, so its rules are testable without Docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import DeviceRequest

from gyoza.worker.iocontract import CONTAINER_IO_DIR, ExitStatus
from gyoza.worker.runtimes.base import ImageMissing, LaunchFailed, LaunchSpec, LogCapture, Orphan

LABEL_RUN, LABEL_ATTEMPT, LABEL_WORKER = "gyoza.run_id", "gyoza.attempt", "gyoza.worker_id"
PULL_POLICIES = ("if-missing", "always", "never")


def container_options(spec: LaunchSpec, network: str) -> dict[str, Any]:
    """The ``containers.run`` keyword arguments for an attempt."""
    options: dict[str, Any] = {
        "image": spec.image,
        "command": spec.command,
        "environment": spec.env,
        "labels": {LABEL_RUN: spec.run_id, LABEL_ATTEMPT: str(spec.attempt), LABEL_WORKER: spec.worker_id},
        "volumes": {str(spec.io_dir): {"bind": CONTAINER_IO_DIR, "mode": "rw"}},
        "network_mode": network,
        "init": True,
        "privileged": False,
        "detach": True,
        "name": f"gyoza-{spec.run_id}-{spec.attempt}",
    }
    if spec.cpu > 0:
        options["nano_cpus"] = int(spec.cpu * 1e9)
    if spec.ram_mb > 0:
        # Equal memory and memory+swap limits: going over is an OOM kill, not a slow swap.
        options["mem_limit"] = options["memswap_limit"] = f"{spec.ram_mb}m"
    if spec.gpu_ids:
        options["device_requests"] = [DeviceRequest(device_ids=[str(i) for i in spec.gpu_ids], capabilities=[["gpu"]])]
    return options


class DockerExecution:
    def __init__(self, container: Container, logs: LogCapture) -> None:
        self.container = container
        self.logs = logs
        self._reader = threading.Thread(target=self._read_logs, daemon=True, name=f"logs-{container.short_id}")
        self._reader.start()

    def _read_logs(self) -> None:
        try:
            for chunk in self.container.logs(stream=True, follow=True, stdout=True, stderr=True):
                self.logs.append(chunk)
        except docker.errors.DockerException:
            pass  # the container is gone; what was read is kept

    async def wait(self) -> ExitStatus:
        result = await asyncio.to_thread(self.container.wait)
        await asyncio.to_thread(self.container.reload)
        await asyncio.to_thread(self._reader.join, 5)
        state = self.container.attrs.get("State", {})
        status = ExitStatus(exit_code=int(result.get("StatusCode", -1)), oom_killed=bool(state.get("OOMKilled")))
        if status.exit_code != 0:  # the stderr tail only explains failures: spare the call on success
            with contextlib.suppress(docker.errors.DockerException):
                tail = await asyncio.to_thread(self.container.logs, stdout=False, stderr=True, tail=20)
                self.logs.set_stderr_tail(tail.decode(errors="replace").splitlines())
        return status

    async def stop(self, grace: float) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            await asyncio.to_thread(self.container.stop, timeout=int(max(grace, 0)))

    async def remove(self) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            await asyncio.to_thread(self.container.remove, force=True)


class DockerRuntime:
    def __init__(self, network: str = "bridge", pull: str = "if-missing") -> None:
        self.client = docker.from_env()
        self.network = network
        self.pull = pull

    async def ensure_image(self, image: str) -> None:
        if self.pull != "always":
            try:
                await asyncio.to_thread(self.client.images.get, image)
                return
            except docker.errors.ImageNotFound:
                if self.pull == "never":
                    raise ImageMissing(f"image {image} is not on this worker and --pull is never") from None
        try:
            await asyncio.to_thread(self.client.images.pull, image)
        except docker.errors.DockerException as exc:
            raise ImageMissing(f"image {image} not found: {exc}") from None

    async def launch(self, spec: LaunchSpec, logs: LogCapture) -> DockerExecution:
        options = container_options(spec, self.network)
        del options["detach"]  # a ``run`` argument; create + start is a detached run
        try:
            container = await asyncio.to_thread(self.client.containers.create, **options)
        except docker.errors.ImageNotFound as exc:
            raise ImageMissing(f"image {spec.image} not found: {exc.explanation}") from None
        except docker.errors.DockerException as exc:
            raise LaunchFailed(f"container could not be created: {exc}") from None
        try:
            await asyncio.to_thread(container.start)
        except docker.errors.DockerException as exc:
            # Created but unable to start (e.g. a GPU request without the NVIDIA runtime): don't leave it behind.
            with contextlib.suppress(docker.errors.DockerException):
                await asyncio.to_thread(container.remove, force=True)
            raise LaunchFailed(f"container failed to start: {exc}") from None
        return DockerExecution(container, logs)

    async def orphans(self, worker_id: str, work_dir: Path) -> list[Orphan]:
        # Sparse: the list answer already holds labels and mounts, and a full listing would inspect each container,
        # failing with 404 when one disappears meanwhile.
        containers = await asyncio.to_thread(
            self.client.containers.list, all=True, sparse=True, filters={"label": f"{LABEL_WORKER}={worker_id}"}
        )
        found = []
        for container in containers:
            labels = container.attrs.get("Labels") or {}
            run_id, attempt = labels.get(LABEL_RUN, ""), int(labels.get(LABEL_ATTEMPT, "0"))
            io_dir = work_dir / f"{run_id}-{attempt}"
            # A previous life of this worker mounted its own work dir. A same-named worker of another cluster on this
            # engine (two `gyoza up`, both "local") did not: its containers are not ours to adopt, let alone stop.
            if _io_mount_source(container) not in (str(io_dir), str(io_dir.resolve())):
                continue
            found.append(Orphan(run_id, attempt, DockerExecution(container, LogCapture()), io_dir))
        return found


def _io_mount_source(container: Container) -> str | None:
    for mount in container.attrs.get("Mounts") or []:
        if mount.get("Destination") == CONTAINER_IO_DIR:
            return str(mount.get("Source"))
    return None
