"""The op SDK's serve loop (``GYOZA_SERVE=1``, a warm instance), as a real subprocess driven through its files the
way the worker drives it: ``setup()`` runs once, each attempt runs in its own directory with its own variables, a
failing attempt fails alone, and a failing setup fails the waiting attempt and ends the instance. A cold run of the
same op calls its setup too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gyoza.op._contract import ATTEMPT_FILE, ATTEMPTS_DIR, DONE_FILE, NEXT_FILE
from tests.waiting import until

SERVING_OPS = """
import os
from gyoza.op import context, op

loaded = []


def load():
    if os.environ.get("SETUP_FAILS"):
        raise RuntimeError("no weights")
    loaded.append(os.getpid())


@op(setup=load)
def predict(x: int) -> dict:
    if x < 0:
        raise ValueError("x must be positive")
    ctx = context()
    return {"y": x * 2, "setups": len(loaded), "run_id": ctx.run_id, "attempt": ctx.attempt, "io_dir": str(ctx.io_dir)}
"""


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "serving.py").write_text(SERVING_OPS)
    directory = tmp_path / "instance"
    (directory / ATTEMPTS_DIR).mkdir(parents=True)
    return directory


def start(instance: Path, **env: str) -> subprocess.Popen[bytes]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("GYOZA_")}
    return subprocess.Popen(
        [sys.executable, "-m", "gyoza.op", "serving:predict"], cwd=instance.parent / "ops",
        env={**clean, "GYOZA_SERVE": "1", "GYOZA_IO_DIR": str(instance), **env}, stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.fixture
def serving(instance: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = start(instance)
    yield process
    process.kill()
    process.wait()


async def hand_over(instance: Path, run_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """What the worker does for an attempt; returns done.json once the op wrote it."""
    directory = instance / ATTEMPTS_DIR / f"{run_id}-1"
    directory.mkdir()
    (directory / "inputs.json").write_text(json.dumps(inputs))
    (directory / ATTEMPT_FILE).write_text(json.dumps({"GYOZA_RUN_ID": run_id, "GYOZA_ATTEMPT": "1"}))
    (instance / f".{NEXT_FILE}.tmp").write_text(directory.name)
    (instance / f".{NEXT_FILE}.tmp").replace(instance / NEXT_FILE)
    done = directory / DONE_FILE
    await until(done.exists, 30, interval=0.005, what=f"attempt {run_id} done")
    result: dict[str, Any] = json.loads(done.read_text())
    return result


def outputs(instance: Path, run_id: str, name: str = "outputs.json") -> Any:
    return json.loads((instance / ATTEMPTS_DIR / f"{run_id}-1" / name).read_text())


async def test_setup_runs_once_and_each_attempt_in_its_own_directory(
    instance: Path, serving: subprocess.Popen[bytes]
) -> None:
    assert await hand_over(instance, "r1", {"x": 2}) == {"exit_code": 0}
    assert await hand_over(instance, "r2", {"x": -1}) == {"exit_code": 1}  # fails alone
    assert await hand_over(instance, "r3", {"x": 5}) == {"exit_code": 0}
    assert outputs(instance, "r1") == {"y": 4, "setups": 1, "run_id": "r1", "attempt": 1,
                                       "io_dir": str(instance / ATTEMPTS_DIR / "r1-1")}  # fmt: skip
    assert outputs(instance, "r2", "error.json")["message"] == "x must be positive"
    assert outputs(instance, "r3")["setups"] == 1 and outputs(instance, "r3")["run_id"] == "r3"
    assert not (instance / NEXT_FILE).exists() and serving.poll() is None


async def test_a_failing_setup_fails_the_waiting_attempt_and_ends_the_instance(instance: Path) -> None:
    process = start(instance, SETUP_FAILS="1")
    try:
        assert await hand_over(instance, "r1", {"x": 2}) == {"exit_code": 1}
        assert outputs(instance, "r1", "error.json")["message"] == "no weights"
        assert process.wait(timeout=30) == 1
    finally:
        process.kill()


def test_a_cold_run_calls_setup_first(instance: Path) -> None:
    (instance / "inputs.json").write_text('{"x": 1}')
    clean = {key: value for key, value in os.environ.items() if not key.startswith("GYOZA_")}
    done = subprocess.run([sys.executable, "-m", "gyoza.op", "serving:predict"], cwd=instance.parent / "ops",
                          env={**clean, "GYOZA_IO_DIR": str(instance)}, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0 and json.loads((instance / "outputs.json").read_text())["setups"] == 1
