"""What the runtime is asked to start for an attempt: its image and command, its environment (the run's env, its
secrets, the IO contract's variables), its limits, and the directories it gets."""

from __future__ import annotations

from pathlib import Path

from gyoza.op._contract import CONTAINER_CACHE_DIR, attempt_env
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


def launch_spec(a: Assignment, settings: WorkerSettings, attempt_dir: Path) -> LaunchSpec:
    in_container = settings.container_io_dir is not None
    cache = cache_dir(a, settings)
    cache_var = None if cache is None else (CONTAINER_CACHE_DIR if in_container else str(cache))
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
