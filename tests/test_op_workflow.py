"""The gyoza.yml workflow (SPEC §8) as a user drives it: ``gyoza op init|build|test`` and ``gyoza deploy``, run as
``python -m gyoza ...`` subprocesses (gyoza.yml validation is in test_opfile_validation.py). Deploys need no Docker;
building and testing images do (the python base image stands in for ``python:3.12-slim``, which this machine cannot
pull).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker.errors
import httpx
import pytest

from gyoza.opfile import load_opfile
from tests.cliproc import BUILD_TIMEOUT_S, NO_SERVER, server_env, stderr_lines
from tests.cliproc import gyoza_offline as gyoza
from tests.dockerimages import PYTHON, docker_client, require_images
from tests.processes import API_KEY, GyozaServer

# --- gyoza op init --------------------------------------------------------------------------------------------------


def test_init_scaffolds_an_op_whose_code_runs_through_the_io_contract(tmp_path: Path) -> None:
    result = gyoza("op", "init", "image-resize", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "image-resize"
    for name in ("gyoza.yml", "main.py", "Dockerfile", ".dockerignore", "examples/inputs.json"):
        assert (root / name).is_file(), name
    assert "cd image-resize\n  gyoza op build" in result.stdout
    opfile = load_opfile(root)
    assert (opfile.name, opfile.version, opfile.image) == ("image-resize", "0.1.0", "gyoza/image-resize:0.1.0")
    assert set(opfile.definition.input_specs) == {"name", "times"}
    assert "ARG BASE_IMAGE=python:3.12-slim" in (root / "Dockerfile").read_text()

    # The scaffolded function (a '-' in the op name becomes '_') runs under the op SDK as the image's CMD would run it.
    io_dir = tmp_path / "io"
    io_dir.mkdir()
    shutil.copy(root / "examples" / "inputs.json", io_dir / "inputs.json")
    env = {**os.environ, "GYOZA_IO_DIR": str(io_dir), "PYTHONPATH": str(root)}
    op = subprocess.run(
        [sys.executable, "-m", "gyoza.op", "main:image_resize"], env=env, capture_output=True, text=True, timeout=60
    )
    assert op.returncode == 0, op.stderr
    outputs = json.loads((io_dir / "outputs.json").read_text())
    assert outputs == {"greetings": [f"Hello, Ada! ({i}/3)" for i in (1, 2, 3)], "count": 3}
    events = [json.loads(line) for line in (io_dir / "events.jsonl").read_text().splitlines()]
    assert events == [
        {"type": "INFO", "msg": "greeting Ada 3 times"},
        *({"type": "PROGRESS", "msg": p} for p in (33, 66, 100)),
    ]


def test_init_never_overwrites_and_refuses_a_bad_name(tmp_path: Path) -> None:
    assert gyoza("op", "init", "first", "--dir", ".", cwd=tmp_path).returncode == 0
    original = (tmp_path / "main.py").read_text()
    again = gyoza("op", "init", "second", "--dir", ".", cwd=tmp_path)
    assert again.returncode == 2
    assert "not overwriting existing files" in again.stderr and "gyoza.yml" in again.stderr
    assert (tmp_path / "main.py").read_text() == original
    bad = gyoza("op", "init", "My_Op", cwd=tmp_path)
    assert bad.returncode == 2
    assert "invalid op name 'My_Op'" in bad.stderr
    assert not (tmp_path / "My_Op").exists()


def test_build_refuses_a_context_that_already_has_a_gyoza_folder(tmp_path: Path) -> None:
    # The op SDK is added to the context as gyoza/: a folder of that name would be silently shadowed.
    assert gyoza("op", "init", "clash", "--dir", ".", cwd=tmp_path).returncode == 0
    (tmp_path / "gyoza").mkdir()
    (tmp_path / "gyoza" / "mine.py").write_text("")
    result = gyoza("op", "build", cwd=tmp_path)
    assert result.returncode == 1
    assert "already has a gyoza/ folder, where the op SDK goes" in result.stderr


# --- gyoza deploy (no build) --------------------------------------------------------------------------------------


def test_deploy_upserts_the_definition_and_asks_for_a_new_version_when_content_changes(
    tmp_path: Path, server: GyozaServer, unique_name: str
) -> None:
    assert gyoza("op", "init", unique_name, "--dir", ".", cwd=tmp_path).returncode == 0
    first = gyoza("deploy", "--no-build", cwd=tmp_path, **server_env(server))
    assert first.returncode == 0, first.stderr
    assert f"Deployed {unique_name} 0.1.0 (image gyoza/{unique_name}:0.1.0)" in first.stdout
    assert f"Run it:  gyoza run {unique_name} -i name=Ada --wait" in first.stdout
    with httpx.Client(base_url=server.url, headers={"X-API-Key": API_KEY}) as http:
        stored = http.get(f"/definitions/{unique_name}").json()
        assert stored["version"] == "0.1.0"
        assert stored["image"] == f"gyoza/{unique_name}:0.1.0"
        assert stored["input_specs"]["times"] == {
            "type": "int", "required": False, "default": 3, "description": "how many greetings", "choices": None,
            "min": 1.0, "max": 100.0,
        }  # fmt: skip
        assert stored["constraints"] == {"cpu": 0.5, "ram_mb": 256, "vram_mb": 0, "gpus": 0}

        again = gyoza("deploy", "--no-build", cwd=tmp_path, **server_env(server))
        assert again.returncode == 0, again.stderr
        assert "is already deployed with this content: unchanged" in again.stdout

        text = (tmp_path / "gyoza.yml").read_text()
        (tmp_path / "gyoza.yml").write_text(text.replace("ram_mb: 256", "ram_mb: 512"))
        changed = gyoza("deploy", "--no-build", cwd=tmp_path, **server_env(server))
        assert changed.returncode == 3
        assert stderr_lines(changed) == [
            f"{unique_name} 0.1.0 is already deployed with different content, and a deployed version never changes: "
            "bump `version` in gyoza.yml (e.g. to 0.1.1) and deploy again"
        ]
        assert http.get(f"/definitions/{unique_name}").json()["constraints"]["ram_mb"] == 256

        (tmp_path / "gyoza.yml").write_text(text.replace("ram_mb: 256", "ram_mb: 512").replace("0.1.0", "0.1.1"))
        bumped = gyoza("deploy", "--no-build", cwd=tmp_path, **server_env(server))
        assert bumped.returncode == 0, bumped.stderr
        latest = http.get(f"/definitions/{unique_name}").json()
        assert (latest["version"], latest["constraints"]["ram_mb"]) == ("0.1.1", 512)


def test_deploy_without_a_server_says_where_it_looked(tmp_path: Path) -> None:
    assert gyoza("op", "init", "lonely", "--dir", ".", cwd=tmp_path).returncode == 0
    result = gyoza("deploy", "--no-build", cwd=tmp_path)
    assert result.returncode == 3
    assert NO_SERVER in result.stderr
    assert "Traceback" not in result.stderr


# --- with Docker: build, test, deploy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltOp:
    root: Path
    name: str
    image: str
    image_id: str


def image_id(image: str) -> str:
    with docker_client() as client:
        return str(client.images.get(image).id)


def remove_images(*tags: str) -> None:
    with docker_client() as client:
        for tag in tags:
            with contextlib.suppress(docker.errors.ImageNotFound):  # a test that failed early built fewer
                client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def built_op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltOp]:
    require_images(PYTHON)
    root = tmp_path_factory.mktemp("built-op")
    name = "op-" + os.urandom(6).hex()
    assert gyoza("op", "init", name, "--dir", ".", cwd=root).returncode == 0
    # The base image as a flag here; the other build below reads it from GYOZA_BASE_IMAGE.
    result = gyoza("op", "build", "--base-image", PYTHON, "--network", "none", cwd=root)
    assert result.returncode == 0, result.stderr
    image = f"gyoza/{name}:0.1.0"
    assert f"Built {image} (" in result.stdout
    yield BuiltOp(root, name, image, image_id(image))
    remove_images(image)


def test_build_tags_the_image_and_puts_the_op_sdk_inside(built_op: BuiltOp) -> None:
    with docker_client() as client:
        image = client.images.get(built_op.image)
        assert image.labels["gyoza.op"] == built_op.name
        assert image.labels["gyoza.version"] == "0.1.0"
        # The SDK came from the build context gyoza op build assembled; the image has no pip-installed gyoza.
        listing = client.containers.run(
            built_op.image, entrypoint=["ls", "/app", "/app/gyoza/op"], network_mode="none", remove=True
        ).decode()
    assert "main.py" in listing and "_runner.py" in listing
    assert not (built_op.root / "gyoza").exists(), "nothing is written into the op's directory"


def test_op_test_runs_the_container_once_and_prints_progress_then_outputs(built_op: BuiltOp) -> None:
    result = gyoza("op", "test", "--inputs-file", "examples/inputs.json", "-i", "times=2", cwd=built_op.root)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"greetings": ["Hello, Ada! (1/2)", "Hello, Ada! (2/2)"], "count": 2}
    lines = stderr_lines(result)
    assert lines[1:4] == ["info     greeting Ada 2 times", "progress  50%", "progress 100%"]
    assert lines[-1].startswith("COMPLETED in ")


def test_op_test_checks_inputs_against_the_specs_before_starting_anything(built_op: BuiltOp) -> None:
    result = gyoza("op", "test", "-i", "times=0", cwd=built_op.root)
    assert result.returncode == 2
    assert stderr_lines(result) == [
        f"inputs do not match the input specs of {built_op.name}:",
        "  inputs.name: required input is missing",
        "  inputs.times: must be >= 1",
    ]


def variant(built_op: BuiltOp, extra: str) -> str:
    """A gyoza.yml for the built image (named explicitly) with ``extra`` fields."""
    return (
        f"name: {built_op.name}\nversion: 0.1.0\nimage: {built_op.image}\n"
        "input_specs:\n  name: {type: string}\n  times: {type: int}\n" + extra
    )


@pytest.mark.parametrize(
    ("extra", "reason", "message"),
    [
        # The command replaces the image's CMD: a function the module lacks fails inside the container.
        ('command: ["main:missing"]\n', "EXIT_CODE", "AttributeError: module 'main' has no function 'missing'"),
        # Outputs are checked against output_specs as the server would check them.
        ("output_specs:\n  summary: {type: string}\n", "OUTPUT_MISSING", "outputs.summary: required output is missing"),
        ("output_specs:\n  count: {type: string}\n", "OUTPUT_INVALID", "outputs.count: expected string, got int"),
        ("timeout_seconds: 0.3\n", "TIMEOUT", "timed out"),
    ],
    ids=["exit-code", "output-missing", "output-invalid", "timeout"],
)
def test_op_test_fails_with_the_reason_a_worker_would_report(
    built_op: BuiltOp, tmp_path: Path, extra: str, reason: str, message: str
) -> None:
    (tmp_path / "gyoza.yml").write_text(variant(built_op, extra))
    result = gyoza("op", "test", "--file", str(tmp_path), "-i", "name=Ada", "-i", "times=3", cwd=built_op.root)
    assert result.returncode == 1, result.stderr
    last = stderr_lines(result)[-1]
    assert last.startswith(f"FAILED ({reason}, exit code ")
    assert message in last
    assert result.stdout == ""


def test_op_test_refuses_outputs_a_worker_could_not_report(built_op: BuiltOp, tmp_path: Path) -> None:
    # collections:Counter returns its keyword arguments as a dict: outputs as large as the inputs given.
    (tmp_path / "gyoza.yml").write_text(variant(built_op, 'command: ["collections:Counter"]\n'))
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"name": "x" * 1_100_000, "times": 1}))
    result = gyoza("op", "test", "--file", str(tmp_path), "--inputs-file", str(inputs), cwd=built_op.root)
    assert result.returncode == 1, result.stderr[-2000:]
    last = stderr_lines(result)[-1]
    assert last.startswith("FAILED (OUTPUT_TOO_LARGE, exit code 0) after ")
    assert "over the limit of 1,048,576 bytes (1 MiB)" in last
    assert result.stdout == ""


def test_ctrl_c_stops_the_op_test_container_and_leaves_nothing(built_op: BuiltOp) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GYOZA_")}
    command = [sys.executable, "-m", "gyoza", "op", "test", "-i", "name=Ada", "-i", "times=100"]
    with subprocess.Popen(command, cwd=built_op.root, env=clean, stderr=subprocess.PIPE, text=True) as process:
        assert process.stderr is not None
        for line in process.stderr:  # the op is running once it reported its first event
            if line.startswith("info     greeting Ada"):
                break
        process.send_signal(signal.SIGINT)
        rest = process.stderr.read()
        assert process.wait(timeout=BUILD_TIMEOUT_S) == 130, rest
    assert "CANCELLED after " in rest and "the container was stopped" in rest
    with docker_client() as client:
        assert client.containers.list(all=True, filters={"label": "gyoza.worker_id=gyoza-op-test"}) == []


async def test_an_engine_error_during_op_test_leaves_no_container(monkeypatch: pytest.MonkeyPatch) -> None:
    from gyoza.opfile.trial import TRIAL_WORKER_ID, run_trial
    from gyoza.schema import OpDefinitionIn
    from gyoza.worker.runtimes.docker import DockerExecution

    require_images(PYTHON)

    async def engine_goes_away(self: DockerExecution) -> None:
        raise RuntimeError("the engine went away")

    monkeypatch.setattr(DockerExecution, "wait", engine_goes_away)
    definition = OpDefinitionIn.model_validate(
        {"name": "sleepy", "version": "1", "image": PYTHON, "command": ["sleep", "60"]}
    )
    with pytest.raises(RuntimeError, match="the engine went away"):
        await run_trial(definition, {}, "none", lambda kind, msg: None)
    with docker_client() as client:
        assert client.containers.list(all=True, filters={"label": f"gyoza.worker_id={TRIAL_WORKER_ID}"}) == []


def test_deploy_refuses_changed_content_before_building_and_calls_out_a_rebuilt_tag(
    built_op: BuiltOp, tmp_path: Path, server: GyozaServer
) -> None:
    # A copy of the built op under a name of its own, so the module's image stays as the other tests expect it.
    name = "op-" + os.urandom(6).hex()
    root = tmp_path / "op"
    shutil.copytree(built_op.root, root)
    opfile = root / "gyoza.yml"
    opfile.write_text(opfile.read_text().replace(f"\nname: {built_op.name}\n", f"\nname: {name}\n"))
    image = f"gyoza/{name}:0.1.0"
    env = {**server_env(server), "GYOZA_BASE_IMAGE": PYTHON, "GYOZA_BUILD_NETWORK": "none"}
    try:
        first = gyoza("deploy", "-q", cwd=root, **env)
        assert first.returncode == 0, first.stderr
        assert f"Deployed {name} 0.1.0 (image {image})" in first.stdout
        deployed_image = image_id(image)

        # New code and new content under the same version: refused before the tag of 0.1.0 could be rebuilt.
        (root / "main.py").write_text((root / "main.py").read_text().replace("Hello", "Howdy"))
        opfile.write_text(opfile.read_text().replace("cpu: 0.5", "cpu: 1"))
        refused = gyoza("deploy", cwd=root, **env)
        assert refused.returncode == 3
        assert "bump `version` in gyoza.yml (e.g. to 0.1.1)" in refused.stderr
        assert "Building" not in refused.stderr
        assert image_id(image) == deployed_image

        # Same definition, new code: deployable (identical content), but the rebuilt tag is called out.
        opfile.write_text(opfile.read_text().replace("cpu: 1", "cpu: 0.5"))
        same = gyoza("deploy", "-q", cwd=root, **env)
        assert same.returncode == 0, same.stderr
        assert "is already deployed with this content: unchanged" in same.stdout
        assert f"warning: the image {image} changed (code or Dockerfile) but the version did not" in same.stderr
        assert image_id(image) != deployed_image

        opfile.write_text(opfile.read_text().replace("version: 0.1.0", "version: 0.2.0"))
        bumped = gyoza("deploy", "-q", cwd=root, **env)
        assert bumped.returncode == 0, bumped.stderr
        assert f"Deployed {name} 0.2.0 (image gyoza/{name}:0.2.0)" in bumped.stdout
        assert "warning: the image" not in bumped.stderr
    finally:
        remove_images(image, f"gyoza/{name}:0.2.0")
