"""The op IO contract (SPEC §7), named once for both sides: the op SDK here and the worker (``gyoza.worker``).

Per attempt the worker prepares a directory, mounts it at ``/gyoza`` in the op's container (a process-runtime op
finds it in ``GYOZA_IO_DIR``) and describes the attempt in ``GYOZA_*`` variables. Standard library only, like the
rest of ``gyoza.op``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

CONTAINER_IO_DIR = "/gyoza"
# A definition's cache (model weights, downloads): the same directory for every run of it on one worker, kept between
# runs; mounted here in a container, given in ``GYOZA_CACHE_DIR`` (a host path for a process-runtime op).
CONTAINER_CACHE_DIR = "/gyoza/cache"

INPUTS_FILE = "inputs.json"  # written by the worker: the run's inputs, a JSON object
OUTPUTS_FILE = "outputs.json"  # written by the op: its outputs, a JSON object
EVENTS_FILE = "events.jsonl"  # appended to by the op, one {"type": "PROGRESS"|"INFO", "msg": ...} per line
ERROR_FILE = "error.json"  # written by the op on failure: {"message": ..., "type": ...}

IO_DIR_VAR = "GYOZA_IO_DIR"
RUN_ID_VAR = "GYOZA_RUN_ID"
ATTEMPT_VAR = "GYOZA_ATTEMPT"
OP_NAME_VAR = "GYOZA_OP_NAME"
OP_VERSION_VAR = "GYOZA_OP_VERSION"
GPU_IDS_VAR = "GYOZA_GPU_IDS"
CACHE_DIR_VAR = "GYOZA_CACHE_DIR"  # only for runs of a definition
# A warm instance (docs/ops.md, "Warm instances"): the worker sets GYOZA_SERVE=1 and mounts the instance's directory at
# /gyoza. For each attempt it makes ``attempts/<name>/`` there, holding ``inputs.json`` and ``attempt.json`` (the
# attempt's GYOZA_* variables), and then writes ``<name>`` into ``next``. The op takes it (removes ``next``), runs the
# attempt in that directory as a cold op runs in /gyoza, and writes ``done.json`` ({"exit_code": n}) there last.
SERVE_VAR = "GYOZA_SERVE"
ATTEMPTS_DIR = "attempts"
NEXT_FILE = "next"
ATTEMPT_FILE = "attempt.json"
DONE_FILE = "done.json"
# Set by an image, not the worker: the module in which ``python -m gyoza.op NAME`` finds the function NAME.
OP_MODULE_VAR = "GYOZA_OP_MODULE"


def attempt_env(
    run_id: str, attempt: int, op_name: str, op_version: str, gpu_ids: Iterable[int], io_dir: str,
    cache_dir: str | None = None,
) -> dict[str, str]:  # fmt: skip
    """The variables the worker gives an op (``read_gpu_ids`` reads the GPU list back)."""
    cache = {CACHE_DIR_VAR: cache_dir} if cache_dir is not None else {}
    return cache | {
        RUN_ID_VAR: run_id,
        ATTEMPT_VAR: str(attempt),
        OP_NAME_VAR: op_name,
        OP_VERSION_VAR: op_version,
        GPU_IDS_VAR: ",".join(str(i) for i in gpu_ids),
        IO_DIR_VAR: io_dir,
    }


def instance_env(
    op_name: str, op_version: str, gpu_ids: Iterable[int], io_dir: str, cache_dir: str | None
) -> dict[str, str]:
    """The variables a warm instance starts with; each attempt's own (run id, attempt) come in its ``attempt.json``."""
    cache = {CACHE_DIR_VAR: cache_dir} if cache_dir is not None else {}
    return cache | {
        SERVE_VAR: "1",
        OP_NAME_VAR: op_name,
        OP_VERSION_VAR: op_version,
        GPU_IDS_VAR: ",".join(str(i) for i in gpu_ids),
        IO_DIR_VAR: io_dir,
    }


def read_gpu_ids(env: Mapping[str, str] = os.environ) -> tuple[int, ...]:
    """The assigned device indexes, written comma-separated ("0,2"); empty means no GPU."""
    raw = env.get(GPU_IDS_VAR, "")
    try:
        return tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{GPU_IDS_VAR} must be comma-separated GPU indexes, got {raw!r}") from None
