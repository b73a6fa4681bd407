"""Where the attempt's files live and what the worker told the op about itself (the GYOZA_* environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gyoza.op._contract import (
    ATTEMPT_VAR,
    CACHE_DIR_VAR,
    CONTAINER_IO_DIR,
    IO_DIR_VAR,
    OP_NAME_VAR,
    OP_VERSION_VAR,
    RUN_ID_VAR,
    read_gpu_ids,
)


def io_dir() -> Path:
    """The attempt's IO directory: ``$GYOZA_IO_DIR``, or ``/gyoza`` where the worker mounts it in a container."""
    return Path(os.environ.get(IO_DIR_VAR) or CONTAINER_IO_DIR)


@dataclass(frozen=True)
class Context:
    """The running attempt as the worker describes it. Fields are None when run outside a worker."""

    io_dir: Path
    run_id: str | None
    attempt: int | None
    op_name: str | None
    op_version: str | None
    gpu_ids: tuple[int, ...]
    cache_dir: Path | None = None  # the definition's cache, kept between its runs on this worker


def _optional(name: str) -> str | None:
    return os.environ.get(name) or None


def context() -> Context:
    """Read the attempt's context from the environment (cheap; call it whenever needed)."""
    attempt = _optional(ATTEMPT_VAR)
    return Context(
        io_dir=io_dir(),
        run_id=_optional(RUN_ID_VAR),
        attempt=int(attempt) if attempt is not None else None,
        op_name=_optional(OP_NAME_VAR),
        op_version=_optional(OP_VERSION_VAR),
        gpu_ids=read_gpu_ids(),
        cache_dir=Path(cache) if (cache := _optional(CACHE_DIR_VAR)) else None,
    )
