"""Where the attempt's files live and what the worker told the op about itself (the GYOZA_* environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_IO_DIR = "/gyoza"


def io_dir() -> Path:
    """The attempt's IO directory: ``$GYOZA_IO_DIR``, or ``/gyoza`` where the worker mounts it in a container."""
    return Path(os.environ.get("GYOZA_IO_DIR") or DEFAULT_IO_DIR)


@dataclass(frozen=True)
class Context:
    """The running attempt as the worker describes it. Fields are None when run outside a worker."""

    io_dir: Path
    run_id: str | None
    attempt: int | None
    op_name: str | None
    op_version: str | None
    gpu_ids: tuple[int, ...]


def _optional(name: str) -> str | None:
    return os.environ.get(name) or None


def _parse_gpu_ids(raw: str) -> tuple[int, ...]:
    # The worker writes the assigned device indexes comma-separated ("0,2"); empty means no GPU.
    try:
        return tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"GYOZA_GPU_IDS must be comma-separated GPU indexes, got {raw!r}") from None


def context() -> Context:
    """Read the attempt's context from the environment (cheap; call it whenever needed)."""
    attempt = _optional("GYOZA_ATTEMPT")
    return Context(
        io_dir=io_dir(),
        run_id=_optional("GYOZA_RUN_ID"),
        attempt=int(attempt) if attempt is not None else None,
        op_name=_optional("GYOZA_OP_NAME"),
        op_version=_optional("GYOZA_OP_VERSION"),
        gpu_ids=_parse_gpu_ids(os.environ.get("GYOZA_GPU_IDS", "")),
    )
