"""The README's five-minute tutorial works as written: its bash blocks run literally, in a fresh folder, against a
``gyoza up`` started here — the way a newcomer would run them in a second shell.

The only help they get is what the README itself tells a machine without registry access to set
(``GYOZA_BASE_IMAGE``, ``GYOZA_BUILD_NETWORK``), plus the data dir of the ``gyoza up`` started here. Commands of
the tutorial that the CLI does not have (yet) make the test skip, naming them, after running every block before
them; nothing else is tolerated.

One word differs from what a reader types: the op's name. The test runs the tutorial with a name of its own
(``hello-<random>``), so the image it builds and removes is its own, never the ``gyoza/hello:0.1.0`` a user may have
built following the README.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker.errors
import httpx
import pytest

from tests.dockerimages import PYTHON, docker_client, require_images
from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TUTORIAL = re.compile(r"<!-- tutorial\b[^>]*-->(.*?)<!-- /tutorial -->", re.S)
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
GYOZA_COMMAND = re.compile(r"^\s*gyoza ((?:[a-z]+)(?: [a-z]+)?)", re.M)
UP_TIMEOUT_S = 60.0
TUTORIAL_TIMEOUT_S = 300.0
TUTORIAL_OP = "hello"  # the op the tutorial creates; `gyoza op build` tags its image gyoza/hello:0.1.0
OP_NAME = re.compile(rf"\b{TUTORIAL_OP}\b")  # lowercase only: the greeting "Hello, Ada!" is not the op's name


def tutorial_blocks() -> list[str]:
    found = TUTORIAL.search(README.read_text())
    assert found, "README.md marks its tutorial with <!-- tutorial --> ... <!-- /tutorial -->"
    return BASH_BLOCK.findall(found.group(1))


def test_the_tutorial_is_marked_and_covers_the_whole_workflow() -> None:
    script = "\n".join(tutorial_blocks())
    for step in ("gyoza op init hello", "gyoza op build", "gyoza op test", "gyoza deploy", "gyoza run hello",
                 "--wait", "gyoza runs list"):  # fmt: skip
        assert step in script, step


def env_without_gyoza() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GYOZA_")}


@functools.cache
def command_exists(words: str) -> bool:
    """Whether ``gyoza <words>`` is a command (``--help`` of an unknown one is a usage error)."""
    result = subprocess.run(
        [sys.executable, "-m", "gyoza", *words.split(), "--help"], env=env_without_gyoza(), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    return result.returncode == 0


def first_missing_command(block: str) -> str | None:
    for words in GYOZA_COMMAND.findall(block):
        # `gyoza run hello` is the `run` command with an argument: try the longest form, then its first word.
        if not (command_exists(words) or command_exists(words.split()[0])):
            return f"gyoza {words}"
    return None


@dataclass(frozen=True)
class Cluster:
    url: str
    api_key: str
    data_dir: Path


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """``gyoza up`` on its embedded NATS, with its own data dir, port, and op containers on network none."""
    require_images(PYTHON)
    data_dir, port = tmp_path / "gyoza-data", free_port()
    log_path = tmp_path / "gyoza-up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gyoza", "up", "--data-dir", str(data_dir), "--port", str(port), "--network",
             "none"],
            env=env_without_gyoza(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        config = wait_until_up(process, data_dir, log_path)
        yield Cluster(config["server_url"], config["api_key"], data_dir)
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C does: the worker drains, then everything stops
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def op_name() -> Iterator[str]:
    """The tutorial's op under a name of this test's own; the image its tutorial run built is removed after."""
    name = f"{TUTORIAL_OP}-{uuid.uuid4().hex[:8]}"
    yield name
    with docker_client() as client, contextlib.suppress(docker.errors.ImageNotFound):
        client.images.remove(f"gyoza/{name}:0.1.0", force=True)


def image_id(tag: str) -> str | None:
    with docker_client() as client:
        try:
            return str(client.images.get(tag).id)
        except docker.errors.ImageNotFound:
            return None


def wait_until_up(process: subprocess.Popen[bytes], data_dir: Path, log_path: Path) -> dict[str, str]:
    """Poll until ``gyoza up`` has written its config and its server answers; fail with its log if it exits."""
    deadline = time.monotonic() + UP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gyoza up exited with {process.returncode}:\n{log_path.read_text()}")
        with contextlib.suppress(OSError, ValueError, KeyError, httpx.HTTPError):
            config = json.loads((data_dir / "config.json").read_text())
            if httpx.get(f"{config['server_url']}/health", timeout=2).status_code == 200:
                return dict(config)
        time.sleep(0.1)
    pytest.fail(f"gyoza up was not ready within {UP_TIMEOUT_S} s:\n{log_path.read_text()}")


def test_the_readme_tutorial_runs_as_written(cluster: Cluster, op_name: str, tmp_path: Path) -> None:
    blocks = tutorial_blocks()
    runnable, missing = blocks, None
    for index, block in enumerate(blocks):
        missing = first_missing_command(block)
        if missing:
            runnable = blocks[:index]
            break
    workdir = tmp_path / "newcomer"
    workdir.mkdir()
    env = {
        **env_without_gyoza(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # the venv, activated
        "GYOZA_DATA_DIR": str(cluster.data_dir),  # where this `gyoza up` saved its URL and key (~/.gyoza otherwise)
        "GYOZA_BASE_IMAGE": PYTHON,  # the README's advice for machines without registry access, like CI's
        "GYOZA_BUILD_NETWORK": "none",
    }
    script = "set -euo pipefail -x\n" + OP_NAME.sub(op_name, "\n".join(runnable))
    users_image = image_id(f"gyoza/{TUTORIAL_OP}:0.1.0")  # one a user built from the README, if any
    result = subprocess.run(
        ["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=TUTORIAL_TIMEOUT_S
    )
    assert result.returncode == 0, f"tutorial failed:\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert image_id(f"gyoza/{TUTORIAL_OP}:0.1.0") == users_image, "the test touched the user's gyoza/hello image"
    # `gyoza op test -i name=Ada` printed the op's outputs (3 greetings by default).
    assert '"Hello, Ada! (3/3)"' in result.stdout
    if missing:
        pytest.skip(f"the README tutorial uses `{missing}`, which this CLI does not have yet; the blocks before it ran")

    with httpx.Client(base_url=cluster.url, headers={"X-API-Key": cluster.api_key}) as http:
        runs = http.get("/runs", params={"op_definition": op_name}).json()["data"]
    assert [(run["state"], run["outputs"]["count"]) for run in runs] == [("COMPLETED", 5)]
    assert '"Hello, Ada! (5/5)"' in result.stdout  # `gyoza run ... --wait` printed the outputs
    assert runs[0]["id"] in result.stdout  # `gyoza runs list` showed it
