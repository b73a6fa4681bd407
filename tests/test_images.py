"""The test images (scripts/build-test-images) and the op SDK together, run through the docker SDK the way the
worker runs ops: network none, init, the attempt's IO directory bind-mounted at /gyoza, nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.dockerimages import BUSYBOX, PYOP, docker_client, require_images


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    require_images(BUSYBOX, PYOP)
    with docker_client() as connection:
        yield connection


def run_container(
    client: docker.DockerClient, image: str, command: list[str], io_dir: Path | None = None, **environment: str
) -> tuple[int, str]:
    """Run to completion like the worker does; return (exit code, stdout+stderr)."""
    volumes = {str(io_dir): {"bind": "/gyoza", "mode": "rw"}} if io_dir else {}
    container = client.containers.run(
        image, command, detach=True, network_mode="none", init=True, volumes=volumes, environment=environment
    )
    try:
        status = container.wait(timeout=60)
        return status["StatusCode"], container.logs().decode()
    finally:
        container.remove(force=True)


def attempt_dir(tmp_path: Path, inputs: dict[str, Any]) -> Path:
    io_dir = tmp_path / "io"
    io_dir.mkdir()
    (io_dir / "inputs.json").write_text(json.dumps(inputs))
    return io_dir


def test_pyop_echo_returns_its_inputs(client: docker.DockerClient, tmp_path: Path) -> None:
    inputs = {"text": "héllo", "n": 3, "nested": {"xs": [1, 2.5, None]}}
    io_dir = attempt_dir(tmp_path, inputs)
    code, logs = run_container(client, PYOP, ["echo"], io_dir)
    assert code == 0, logs
    assert json.loads((io_dir / "outputs.json").read_text()) == inputs


def test_pyop_sees_the_worker_environment(client: docker.DockerClient, tmp_path: Path) -> None:
    io_dir = attempt_dir(tmp_path, {})
    env = {"GYOZA_RUN_ID": "r-1", "GYOZA_ATTEMPT": "3", "GYOZA_OP_NAME": "n", "GYOZA_OP_VERSION": "v"}
    env["GYOZA_GPU_IDS"] = ""  # no GPU: the worker still sets it, empty
    code, logs = run_container(client, PYOP, ["whoami"], io_dir, **env)
    assert code == 0, logs
    assert json.loads((io_dir / "outputs.json").read_text()) == {
        "run_id": "r-1",
        "attempt": 3,
        "op_name": "n",
        "op_version": "v",
        "gpu_ids": [],
        "io_dir": "/gyoza",  # the default when GYOZA_IO_DIR is not set
    }


def test_pyop_progress_writes_events(client: docker.DockerClient, tmp_path: Path) -> None:
    io_dir = attempt_dir(tmp_path, {"steps": 2, "delay": 0})
    code, logs = run_container(client, PYOP, ["progress"], io_dir)
    assert code == 0, logs
    lines = [json.loads(line) for line in (io_dir / "events.jsonl").read_text().splitlines()]
    assert [e["msg"] for e in lines if e["type"] == "PROGRESS"] == [0, 50, 100]
    assert [e["msg"] for e in lines if e["type"] == "INFO"] == ["step 1/2", "step 2/2"]


def test_pyop_fail_writes_error_json(client: docker.DockerClient, tmp_path: Path) -> None:
    io_dir = attempt_dir(tmp_path, {})
    code, logs = run_container(client, PYOP, ["fail"], io_dir)
    assert code == 1
    error = json.loads((io_dir / "error.json").read_text())
    assert (error["type"], error["message"]) == ("ValueError", "bad input")
    assert "ValueError: bad input" in logs


def test_pyop_exit_code_exits_without_error_json(client: docker.DockerClient, tmp_path: Path) -> None:
    io_dir = attempt_dir(tmp_path, {"code": 7, "message": "disk on fire"})
    code, logs = run_container(client, PYOP, ["exit_code"], io_dir)
    assert code == 7
    assert "disk on fire" in logs
    assert not (io_dir / "error.json").exists()


def test_busybox_runs_a_shell(client: docker.DockerClient) -> None:
    code, logs = run_container(client, BUSYBOX, ["sh", "-c", "echo ready; exit 4"])
    assert (code, logs.strip()) == (4, "ready")
