"""The Docker runtime (docker SDK, its blocking calls run in threads): one container per attempt.

Containers run with an init process (so SIGTERM reaches the op), the CPU quota and memory limit of the run's
constraints, only the assigned GPUs, the attempt directory at /gyoza, labels naming the run and attempt, the
configured network, and never privileged. ``container_options`` is pure, so its rules are testable without Docker.

Logs: stdout and stderr are followed live (so the uploads while an op runs show its progress) and, once the
container exited, read back whole from the engine, stamped and by stream. The read-back is what the attempt keeps:
a live stream can attach after a short-lived container already ended, or miss its last lines, but the engine's
record has every byte the container wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import DeviceRequest

from gyoza.op._contract import CONTAINER_CACHE_DIR, CONTAINER_IO_DIR
from gyoza.schema import PullCredential
from gyoza.worker.iocontract import ExitStatus
from gyoza.worker.runtimes.base import (
    STDERR,
    STDOUT,
    ImageMissing,
    LaunchFailed,
    LaunchSpec,
    LogCapture,
    Orphan,
    timestamp,
)
from gyoza.worker.telemetry import UsageMeter, follow_container_stats

LABEL_RUN, LABEL_ATTEMPT, LABEL_WORKER = "gyoza.run_id", "gyoza.attempt", "gyoza.worker_id"
LABEL_INSTANCE = "gyoza.instance"  # a warm instance's container, serving one attempt after another
# Which environment variables hold secrets (names only): a later life of the worker that adopts the container reads
# their values back from it, to go on masking them in the log.
LABEL_SECRETS = "gyoza.secret_env"
STDERR_TAIL_LINES = 20
# Every running container holds a few engine connections (its wait and two log streams): room for many at once.
MAX_ENGINE_CONNECTIONS = 256
_ENTRY = re.compile(rb"[^\n]*\n|[^\n]+$")
T = TypeVar("T")


def container_options(spec: LaunchSpec, network: str) -> dict[str, Any]:
    """The ``containers.run`` keyword arguments for an attempt."""
    labels = {LABEL_RUN: spec.run_id, LABEL_ATTEMPT: str(spec.attempt), LABEL_WORKER: spec.worker_id}
    name = f"gyoza-{spec.run_id}-{spec.attempt}"
    if spec.instance_id is not None:  # no run labels: a later life of the worker must not adopt it as an attempt
        labels = {LABEL_INSTANCE: spec.instance_id, LABEL_WORKER: spec.worker_id}
        name = f"gyoza-warm-{spec.instance_id}"
    options: dict[str, Any] = {
        "image": spec.image,
        "command": spec.command,
        "environment": spec.env,
        "labels": labels,
        "volumes": {str(spec.io_dir): {"bind": CONTAINER_IO_DIR, "mode": "rw"}},
        "network_mode": network,
        "init": True,
        "privileged": False,
        "detach": True,
        "name": name,
    }
    if spec.cache_dir is not None:
        options["volumes"][str(spec.cache_dir)] = {"bind": CONTAINER_CACHE_DIR, "mode": "rw"}
    if spec.secret_names:
        options["labels"][LABEL_SECRETS] = ",".join(spec.secret_names)
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
        # Both replaced per attempt on a warm instance: the followers below write to whichever is current.
        self.logs = logs
        self.meter = UsageMeter()
        self.since: float | None = None  # where the read-back after the exit starts (a warm instance's attempt)
        for stream in (STDOUT, STDERR):
            threading.Thread(target=self._follow_logs, args=(stream,), daemon=True,
                             name=f"logs-{stream}-{container.short_id}").start()  # fmt: skip
        threading.Thread(target=self._follow_stats, daemon=True, name=f"stats-{container.short_id}").start()

    def _follow_stats(self) -> None:
        """The engine's stats of the container, about one a second, into the meter until the container ends."""
        try:
            stream = self.container.stats(stream=True, decode=True)
        except docker.errors.DockerException:
            return
        follow_container_stats(stream, self.meter)

    def _follow_logs(self, stream: str) -> None:
        try:
            for chunk in self._logs(stream, follow=True):
                for stamp, data in _entries(chunk):
                    self.logs.add(stamp, stream, data)
        except docker.errors.DockerException:
            pass  # the container is gone; the read-back after its exit decides what is kept

    def _logs(self, stream: str, follow: bool, **options: Any) -> Iterable[bytes]:
        chunks: Iterable[bytes] = self.container.logs(
            stream=True, follow=follow, timestamps=True, stdout=stream == STDOUT, stderr=stream == STDERR, **options
        )
        return chunks

    async def wait(self) -> ExitStatus:
        result = await _in_own_thread(self.container.wait)
        await asyncio.to_thread(self.container.reload)
        state = self.container.attrs.get("State", {})
        with contextlib.suppress(docker.errors.DockerException):
            await asyncio.to_thread(self._read_back, self.since)
        return ExitStatus(exit_code=int(result.get("StatusCode", -1)), oom_killed=bool(state.get("OOMKilled")))

    async def read_back(self, since: float | None) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            await asyncio.to_thread(self._read_back, since)
        self.logs.close()  # sealed by the read-back; closed here should the engine not have answered

    def _read_back(self, since: float | None) -> None:
        """Replace the live capture by the engine's record of the container (each stream up to the limit), from
        ``since`` on."""
        entries: list[tuple[str, str, bytes]] = []
        stderr_complete = True
        window = {} if since is None else {"since": since}
        for stream in (STDOUT, STDERR):
            size = 0
            for chunk in self._logs(stream, follow=False, **window):
                entries.extend((stamp, stream, data) for stamp, data in _entries(chunk))
                size += len(chunk)
                if size > self.logs.limit:
                    stderr_complete = stream != STDERR
                    break
        self.logs.replace(entries)
        if not stderr_complete:  # the error message needs the last lines, beyond the part kept
            tail = b"".join(self._logs(STDERR, follow=False, tail=STDERR_TAIL_LINES, **window))
            self.logs.set_stderr_tail([data.decode(errors="replace").rstrip("\n") for _, data in _entries(tail)])

    async def stop(self, grace: float) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            await asyncio.to_thread(self.container.stop, timeout=int(max(grace, 0)))

    async def remove(self) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            await asyncio.to_thread(self.container.remove, force=True)

    def abandon(self) -> bool:
        """The container keeps running (or stays exited) for the worker's next start to adopt and report."""
        return True


def _entries(chunk: bytes) -> list[tuple[str, bytes]]:
    """Docker's timestamped log lines (``2025-06-01T12:00:00.123456789Z text``) as (stamp, text)."""
    found = []
    for match in _ENTRY.finditer(chunk):
        raw_stamp, _, data = match.group().partition(b" ")
        found.append((_stamp(raw_stamp), data))
    return found


def _stamp(raw: bytes) -> str:
    """Docker's RFC 3339 stamp (nanoseconds, trailing zeros trimmed) in the fixed-width form of ``timestamp()``."""
    text = raw.decode(errors="replace")
    head, _, fraction = text.removesuffix("Z").partition(".")
    if len(head) != 19 or not (fraction.isdigit() or not fraction):
        return timestamp()
    return f"{head}.{fraction[:6].ljust(6, '0')}Z"


async def _in_own_thread(call: Callable[[], T]) -> T:
    """Run a call that blocks as long as a container runs in a thread of its own: in the default executor (a few
    threads) each running container would hold one, and the next launch would queue behind them."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        try:
            result = call()
        except BaseException as exc:  # handed to the awaiting task
            error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(settle, lambda: future.set_exception(error))
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    threading.Thread(target=target, daemon=True, name="container-wait").start()
    return await future


class DockerRuntime:
    def __init__(self, network: str = "bridge", pull: str = "if-missing") -> None:
        self.client = docker.from_env(max_pool_size=MAX_ENGINE_CONNECTIONS)
        self.network = network
        self.pull = pull
        # Images seen on the engine: the next attempt of the same image skips the engine call that checks for it
        # (``launch`` finds out should one be removed meanwhile, and checks or pulls again then).
        self._present: set[str] = set()

    async def ensure_image(self, image: str, login: PullCredential | None = None) -> None:
        if self.pull != "always":
            if image in self._present:
                return
            try:
                await asyncio.to_thread(self.client.images.get, image)
                self._present.add(image)
                return
            except docker.errors.ImageNotFound:
                if self.pull == "never":
                    raise ImageMissing(f"image {image} is not on this worker and --pull is never") from None
        try:
            auth = None if login is None else {"username": login.username, "password": login.password}
            await asyncio.to_thread(self.client.images.pull, image, auth_config=auth)
        except docker.errors.DockerException as exc:
            raise ImageMissing(f"image {image} not found: {exc}") from None
        self._present.add(image)

    async def launch(self, spec: LaunchSpec, logs: LogCapture) -> DockerExecution:
        options = container_options(spec, self.network)
        del options["detach"]  # a ``run`` argument; create + start is a detached run
        try:
            container = await self._create(spec.image, options, spec.login)
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

    async def _create(self, image: str, options: dict[str, Any], login: PullCredential | None) -> Container:
        try:
            return await asyncio.to_thread(self.client.containers.create, **options)
        except docker.errors.ImageNotFound:
            if image not in self._present:
                raise
        # Removed since it was seen: check (and pull, as the policy says) once more, like a first attempt would.
        self._present.discard(image)
        await self.ensure_image(image, login)
        return await asyncio.to_thread(self.client.containers.create, **options)

    async def images(self) -> list[str]:
        listed = await asyncio.to_thread(self.client.images.list)
        return [tag for image in listed for tag in image.tags]

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
            masks = await self._secret_values(container.id, labels.get(LABEL_SECRETS, ""))
            found.append(Orphan(run_id, attempt, DockerExecution(container, LogCapture(masks=masks))))
        return found

    async def remove_instances(self, worker_id: str, instances_dir: Path) -> int:
        containers = await asyncio.to_thread(
            self.client.containers.list, all=True, sparse=True,
            filters={"label": [f"{LABEL_WORKER}={worker_id}", LABEL_INSTANCE]},
        )  # fmt: skip
        removed, ours = 0, {str(instances_dir), str(instances_dir.resolve())}  # noqa: ASYNC240 (no I/O: a symlink at most)
        for container in containers:
            if str(Path(_io_mount_source(container) or "").parent) not in ours:
                continue  # a same-named worker of another cluster on this engine (see ``orphans``)
            with contextlib.suppress(docker.errors.DockerException):
                await asyncio.to_thread(self.client.api.remove_container, container.id, force=True)
                removed += 1
        return removed

    async def _secret_values(self, container_id: str, names: str) -> list[str]:
        """The values of the secret variables a label names, read back from the container's environment."""
        if not names:
            return []
        wanted = set(names.split(","))
        try:
            full = await asyncio.to_thread(self.client.containers.get, container_id)
        except docker.errors.DockerException:
            return []  # gone meanwhile: nothing of it will be logged
        pairs = (entry.partition("=") for entry in full.attrs.get("Config", {}).get("Env") or [])
        return [value for name, _, value in pairs if name in wanted]


def _io_mount_source(container: Container) -> str | None:
    for mount in container.attrs.get("Mounts") or []:
        if mount.get("Destination") == CONTAINER_IO_DIR:
            return str(mount.get("Source"))
    return None
