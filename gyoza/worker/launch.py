"""What the runtime is asked to start for an attempt: its image and command, its environment (the run's env, its
secrets, the IO contract's variables), its limits, and the directories it gets."""

from __future__ import annotations

from pathlib import Path

from gyoza.op._contract import CONTAINER_CACHE_DIR, attempt_env, instance_env
from gyoza.schema import Assignment
from gyoza.worker.runtimes.base import LaunchSpec
from gyoza.worker.settings import WorkerSettings

# Definitions' caches, one directory each, beside the worker's attempt directories (``/gyoza/cache`` in a container).
CACHE_DIR_NAME = "cache"


def cache_dir(assignment: Assignment, settings: WorkerSettings) -> Path | None:
    """The definition's cache directory on this worker (made when missing); None for an ad hoc run."""
    if assignment.op_definition is None:
        return None
    path = settings.work_dir.parent / CACHE_DIR_NAME / assignment.op_definition
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cache(a: Assignment, settings: WorkerSettings) -> tuple[Path | None, str | None]:
    """The definition's cache directory here, and where the op finds it (its ``GYOZA_CACHE_DIR``)."""
    cache = cache_dir(a, settings)
    if cache is None:
        return None, None
    return cache, CONTAINER_CACHE_DIR if settings.container_io_dir is not None else str(cache)


def launch_spec(a: Assignment, settings: WorkerSettings, attempt_dir: Path) -> LaunchSpec:
    cache, cache_var = _cache(a, settings)
    contract = attempt_env(
        a.run_id, a.attempt, a.op_definition or "", a.definition_version or "", a.gpu_ids,
        settings.container_io_dir or str(attempt_dir), cache_var,
    )  # fmt: skip
    return LaunchSpec(
        run_id=a.run_id, attempt=a.attempt, worker_id=settings.name, image=a.image, command=a.command,
        env={**a.env, **a.secret_env, **contract}, cpu=a.constraints.cpu, ram_mb=a.constraints.ram_mb,
        gpu_ids=list(a.gpu_ids), io_dir=attempt_dir, secret_names=tuple(sorted(a.secret_env)),
        login=a.pull_credential, cache_dir=cache,
    )  # fmt: skip


def instance_spec(a: Assignment, settings: WorkerSettings, instance_dir: Path, instance_id: str) -> LaunchSpec:
    """A warm instance started for ``a``: its definition's env and secrets, ``a``'s limits and GPUs, for good."""
    cache, cache_var = _cache(a, settings)
    contract = instance_env(
        a.op_definition or "", a.definition_version or "", a.gpu_ids, settings.container_io_dir or str(instance_dir),
        cache_var,
    )  # fmt: skip
    return LaunchSpec(
        run_id=a.run_id, attempt=a.attempt, worker_id=settings.name, image=a.image, command=a.command,
        env={**a.env, **a.secret_env, **contract}, cpu=a.constraints.cpu, ram_mb=a.constraints.ram_mb,
        gpu_ids=list(a.gpu_ids), io_dir=instance_dir, secret_names=tuple(sorted(a.secret_env)),
        login=a.pull_credential, cache_dir=cache, instance_id=instance_id,
    )  # fmt: skip
