"""The op IO contract on the worker's side (SPEC §7): the per-attempt directory mounted at ``/gyoza``.

The worker writes ``inputs.json``; the op writes ``outputs.json``, appends ``events.jsonl`` lines that are forwarded
live, and may write ``error.json`` on failure. How the process ended plus these files decide the outcome. The names
are those of ``gyoza.op._contract``, shared with the op SDK.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gyoza.op._contract import ERROR_FILE, EVENTS_FILE, INPUTS_FILE, OUTPUTS_FILE
from gyoza.schema import FailureReason

# How PyTorch, TensorFlow/XLA, JAX, CuPy and CUDA itself say the GPU ran out of memory.
_GPU_OOM = re.compile(
    r"CUDA out of memory|torch(\.cuda)?\.OutOfMemoryError|CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation|"
    r"RESOURCE_EXHAUSTED: Out of memory|CUBLAS_STATUS_ALLOC_FAILED|out of memory allocating .* on device",
)


def gpu_out_of_memory(*texts: str) -> bool:
    """Whether an op's error or stderr says it ran out of GPU memory (``GPU_OOM`` instead of ``EXIT_CODE``)."""
    return any(_GPU_OOM.search(text) for text in texts)


@dataclass(frozen=True)
class ExitStatus:
    exit_code: int
    oom_killed: bool = False
    timed_out: bool = False
    cancelled: bool = False


@dataclass
class Outcome:
    """What to report: COMPLETED with outputs, FAILED with a reason, or CANCELLED."""

    type: Literal["COMPLETED", "FAILED", "CANCELLED"]
    outputs: dict[str, Any] = field(default_factory=dict)
    reason: FailureReason | None = None
    error: str = ""
    exit_code: int | None = None


class AttemptDir:
    """``<work_dir>/<run_id>-<attempt>``: created before start, removed after the final report."""

    def __init__(self, work_dir: Path, run_id: str, attempt: int) -> None:
        self.path = work_dir / f"{run_id}-{attempt}"

    def prepare(self, inputs: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.path.chmod(0o777)  # the op may run as any user inside its container
        (self.path / INPUTS_FILE).write_text(json.dumps(inputs))

    @property
    def events_file(self) -> Path:
        return self.path / EVENTS_FILE

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def outcome(self, status: ExitStatus, stderr_tail: str) -> Outcome:
        if status.cancelled:
            return Outcome("CANCELLED", exit_code=status.exit_code)
        if status.timed_out:
            return Outcome("FAILED", reason=FailureReason.TIMEOUT, error="timed out", exit_code=status.exit_code)
        if status.oom_killed:
            return Outcome(
                "FAILED", reason=FailureReason.OOM_KILLED, exit_code=status.exit_code,
                error="the container was killed for using more memory than its ram_mb limit",
            )  # fmt: skip
        if status.exit_code != 0:
            message = self._error_message() or stderr_tail or f"exited with code {status.exit_code}"
            reason = FailureReason.GPU_OOM if gpu_out_of_memory(message, stderr_tail) else FailureReason.EXIT_CODE
            return Outcome("FAILED", reason=reason, error=message, exit_code=status.exit_code)
        outputs_file = self.path / OUTPUTS_FILE
        if not outputs_file.exists():
            return Outcome("COMPLETED", outputs={}, exit_code=0)
        try:
            outputs = json.loads(outputs_file.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            return Outcome("FAILED", reason=FailureReason.OUTPUT_INVALID, error=f"{OUTPUTS_FILE}: {exc}", exit_code=0)
        if not isinstance(outputs, dict):
            return Outcome(
                "FAILED", reason=FailureReason.OUTPUT_INVALID, exit_code=0,
                error=f"{OUTPUTS_FILE} must hold a JSON object",
            )  # fmt: skip
        return Outcome("COMPLETED", outputs=outputs, exit_code=0)

    def _error_message(self) -> str:
        error_file = self.path / ERROR_FILE
        if not error_file.exists():
            return ""
        try:
            error = json.loads(error_file.read_text())
        except (ValueError, UnicodeDecodeError):
            return error_file.read_text(errors="replace")[:2000]
        if isinstance(error, dict):
            kind = error.get("type")
            message = str(error.get("message", ""))
            return f"{kind}: {message}" if kind else message
        return str(error)


def parse_event_line(line: str) -> tuple[Literal["PROGRESS", "INFO"], str | int] | None:
    """A line of events.jsonl as (type, msg) for PROGRESS/INFO, or None when it is not one."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("type") not in ("PROGRESS", "INFO"):
        return None
    msg = event.get("msg", "")
    if event["type"] == "PROGRESS":
        if isinstance(msg, bool) or not isinstance(msg, int | float):
            return None
        return "PROGRESS", max(0, min(100, int(msg)))
    return "INFO", str(msg)[:10_000]
