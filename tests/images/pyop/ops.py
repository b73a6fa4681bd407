"""Test ops baked into ``gyoza-test/pyop:latest`` (run as ``docker run gyoza-test/pyop:latest <op>``).

Each exercises one path of the worker: success, live events, failure, cancel/timeout, OOM, output validation,
raw exit codes, GPU visibility, a careless op leaking a secret to its log and measurable usage. Standard library
+ ``gyoza.op`` only.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any

import gyoza.op as sdk


@sdk.op
def echo(**inputs: Any) -> dict[str, Any]:
    """Return the inputs unchanged."""
    return inputs


@sdk.op
def progress(steps: int = 5, delay: float = 0.05) -> dict[str, Any]:
    """Report progress 0..100 in ``steps`` steps, an INFO per step, sleeping ``delay`` seconds between them."""
    sdk.progress(0)
    for step in range(1, steps + 1):
        time.sleep(delay)
        sdk.info(f"step {step}/{steps}")
        sdk.progress(step * 100 // steps)
    return {"steps": steps}


@sdk.op
def fail() -> None:
    """Fail the way user code does."""
    raise ValueError("bad input")


@sdk.op
def sleep(seconds: float = 3600) -> dict[str, Any]:
    """Sleep (for cancel and timeout tests). SIGTERM keeps its default action: the process dies at once."""
    sdk.info(f"sleeping {seconds}s")
    time.sleep(seconds)
    return {"slept": seconds}


@sdk.op
def oom(chunk_mb: int = 16, max_mb: int = 4096) -> dict[str, Any]:
    """Allocate memory until the container's limit kills it (stops at ``max_mb`` so it cannot eat a host)."""
    hoard = []
    while len(hoard) * chunk_mb < max_mb:
        # b"x" * n writes every byte, so the pages are really resident (a zero-filled bytearray may not be).
        hoard.append(b"x" * (chunk_mb * 1024 * 1024))
    return {"allocated_mb": len(hoard) * chunk_mb}


@sdk.op
def bad_outputs() -> dict[str, Any]:
    """Outputs that break an output spec declaring ``score: float``."""
    return {"score": "high"}


@sdk.op
def exit_code(code: int = 3, message: str = "exiting on purpose") -> None:
    """Exit with ``code`` after writing ``message`` to stderr, bypassing the SDK's error.json."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    sys.exit(code)  # SystemExit is not an op failure: the SDK lets it through, no error.json


@sdk.op
def gpu() -> dict[str, Any]:
    """Which GPUs the op was given and which the container runtime exposes."""
    return {
        "gyoza_gpu_ids": os.environ.get("GYOZA_GPU_IDS"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "nvidia_visible_devices": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
        "context_gpu_ids": list(sdk.context().gpu_ids),
    }


@sdk.op
def whoami() -> dict[str, Any]:
    """The attempt's context as the op sees it (run id, attempt, op name/version, GPUs)."""
    ctx = sdk.context()
    return {
        "run_id": ctx.run_id,
        "attempt": ctx.attempt,
        "op_name": ctx.op_name,
        "op_version": ctx.op_version,
        "gpu_ids": list(ctx.gpu_ids),
        "io_dir": str(ctx.io_dir),
    }


@sdk.op
def leak(variable: str, code: int = 0) -> dict[str, Any]:
    """Print the value of an environment variable (a secret) to stdout and stderr, as a careless op would; return
    only its SHA-256 and length, so a test can tell it arrived; with ``code``, exit with it instead."""
    value = os.environ.get(variable, "")
    print(f"connecting with {value} now", flush=True)
    sys.stderr.write(f"debug: {variable}={value}\n")
    sys.stderr.flush()
    if code:
        sys.exit(code)
    return {"sha256": hashlib.sha256(value.encode()).hexdigest(), "length": len(value)}


@sdk.op
def hold(mb: int = 100, seconds: float = 3.0) -> dict[str, Any]:
    """Hold ``mb`` of resident memory and keep one core busy for ``seconds``: usage a worker can measure."""
    hoard = b"x" * (mb * 1024 * 1024)
    deadline, spins = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        spins += 1
    return {"held_mb": len(hoard) // (1024 * 1024), "spins": spins}


@sdk.op
def remember(note: str) -> dict[str, Any]:
    """Keep ``note`` in the definition's cache and return what the previous run kept there (None the first time)."""
    cache = sdk.context().cache_dir
    if cache is None:
        return {"previous": None, "cache": None}
    kept = cache / "note.txt"
    previous = kept.read_text() if kept.exists() else None
    kept.write_text(note)
    return {"previous": previous, "cache": str(cache)}


# The model a warm op loads once per instance (``_load``): which process loaded it, and when.
_model: dict[str, Any] = {}


def _load() -> None:
    """A slow setup (``SETUP_SECONDS``) that notes each call in the definition's cache, so a test can count them;
    with ``SETUP_FAILS`` set it fails, as a missing model file would."""
    time.sleep(float(os.environ.get("SETUP_SECONDS", "0")))
    if os.environ.get("SETUP_FAILS"):
        raise RuntimeError("could not load the model")
    cache = sdk.context().cache_dir
    if cache is not None:
        with (cache / "setups.log").open("a") as log:
            log.write(f"{os.getpid()}\n")
    _model.update(pid=os.getpid(), loaded_at=time.time(), served=0)


@sdk.op(setup=_load)
def warm(crash: bool = False, fail: bool = False, seconds: float = 0.0, note: str = "") -> dict[str, Any]:
    """Serve one run with the loaded model: ``crash`` kills the instance, ``fail`` fails only this run."""
    _model["served"] += 1
    print(f"serving {sdk.context().run_id} {note}", flush=True)
    if crash:
        os._exit(7)
    if fail:
        raise ValueError("bad input")
    sdk.progress(50)
    time.sleep(seconds)
    return {"pid": _model["pid"], "loaded_at": _model["loaded_at"], "served": _model["served"],
            "run_id": sdk.context().run_id, "io_dir": str(sdk.context().io_dir)}  # fmt: skip
