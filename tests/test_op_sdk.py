"""The Python op SDK (``gyoza.op``) through the IO contract of SPEC §7, run as real subprocesses (no Docker).

Each test writes ``inputs.json`` into a fresh IO directory, runs ``python -m gyoza.op sample:<op>`` with
``GYOZA_IO_DIR`` pointing at it, and checks what a worker would see: exit code, outputs.json, events.jsonl,
error.json and stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

SAMPLE_OPS = """
import time
from typing import Any, Optional

from gyoza.op import context, info, op, progress, run


@op
def add(a: int, b: float = 0.5, label: str = "sum", flag: bool = False,
        tags: list[str] | None = None, extra: Optional[dict[str, int]] = None) -> dict[str, Any]:
    return {"total": a + b, "b_type": type(b).__name__, "label": label, "flag": flag, "tags": tags, "extra": extra}


@op
def report(steps: int) -> dict[str, Any]:
    for step in range(steps + 1):
        progress(step * 100 // steps)
        info(f"step {step}")
    return {"done": True}


@op
def live() -> dict[str, Any]:
    # Blocks until the test answers: proves the event reached the file while the op was still running.
    progress(10)
    go = context().io_dir / "go"
    while not go.exists():
        time.sleep(0.005)
    return {}


@op
def boom() -> None:
    raise ValueError("bad input")


@op
def returns_list() -> list[int]:
    return [1, 2]


@op
def returns_none() -> None:
    return None


@op
def returns_nan() -> dict[str, float]:
    return {"x": float("nan")}


@op
def whoami() -> dict[str, Any]:
    ctx = context()
    return {"run_id": ctx.run_id, "attempt": ctx.attempt, "op_name": ctx.op_name, "op_version": ctx.op_version,
            "gpu_ids": list(ctx.gpu_ids), "io_dir": str(ctx.io_dir)}


def not_decorated(x: int) -> dict[str, int]:
    return {"x": x}


if __name__ == "__main__":
    run(boom)
"""


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ops")
    (directory / "sample.py").write_text(SAMPLE_OPS)
    return directory


@pytest.fixture
def io_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "io"
    directory.mkdir()
    return directory


def _env(io_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GYOZA_")}
    return {**env, "GYOZA_IO_DIR": str(io_dir), **extra}


def run_op(
    sample_dir: Path, io_dir: Path, target: str, inputs: object = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gyoza.op target`` like a worker would; ``inputs=None`` writes no inputs.json."""
    if inputs is not None:
        (io_dir / "inputs.json").write_text(json.dumps(inputs))
    return subprocess.run(
        [sys.executable, "-m", "gyoza.op", target],
        cwd=sample_dir,
        env=_env(io_dir, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def events(io_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (io_dir / "events.jsonl").read_text().splitlines()]


def test_outputs_are_written_from_typed_inputs(sample_dir: Path, io_dir: Path) -> None:
    result = run_op(sample_dir, io_dir, "sample:add", {"a": 2, "b": 1, "tags": ["x"], "extra": {"k": 1}})
    assert result.returncode == 0, result.stderr
    # b: float accepts the JSON int 1 and converts it; defaults fill what the inputs leave out.
    assert read_json(io_dir / "outputs.json") == {
        "total": 3.0,
        "b_type": "float",
        "label": "sum",
        "flag": False,
        "tags": ["x"],
        "extra": {"k": 1},
    }
    # Atomic write: only the final file remains, no temp file, and no error.json on success.
    assert sorted(path.name for path in io_dir.iterdir()) == ["inputs.json", "outputs.json"]


def test_null_is_accepted_for_optional_parameters(sample_dir: Path, io_dir: Path) -> None:
    result = run_op(sample_dir, io_dir, "sample:add", {"a": 1, "tags": None, "extra": None})
    assert result.returncode == 0, result.stderr
    assert read_json(io_dir / "outputs.json")["tags"] is None


def test_every_input_problem_is_reported_at_once(sample_dir: Path, io_dir: Path) -> None:
    inputs = {"a": True, "b": "x", "flag": 1, "tags": ["ok", 3], "extra": {"k": "v"}, "colour": "red"}
    result = run_op(sample_dir, io_dir, "sample:add", inputs)
    assert result.returncode == 1
    error = read_json(io_dir / "error.json")
    assert error["type"] == "InputError"
    for problem in (
        "inputs.a: expected int, got bool",  # true is not an int
        "inputs.b: expected float, got string",
        "inputs.flag: expected bool, got int",
        "inputs.tags[1]: expected string, got int",
        "inputs.extra.k: expected int, got string",
        "inputs.colour: unknown input",
    ):
        assert problem in error["message"]
    assert not (io_dir / "outputs.json").exists()  # the function never ran


def test_missing_required_input_is_an_error(sample_dir: Path, io_dir: Path) -> None:
    result = run_op(sample_dir, io_dir, "sample:add", {"b": 1.5})
    assert result.returncode == 1
    assert "inputs.a: missing required input" in read_json(io_dir / "error.json")["message"]


def test_progress_and_info_are_json_lines(sample_dir: Path, io_dir: Path) -> None:
    result = run_op(sample_dir, io_dir, "sample:report", {"steps": 4})
    assert result.returncode == 0, result.stderr
    expected: list[dict[str, Any]] = []
    for step, percent in enumerate([0, 25, 50, 75, 100]):
        expected += [{"type": "PROGRESS", "msg": percent}, {"type": "INFO", "msg": f"step {step}"}]
    assert events(io_dir) == expected
    assert read_json(io_dir / "outputs.json") == {"done": True}


def test_events_reach_the_file_while_the_op_runs(sample_dir: Path, io_dir: Path) -> None:
    (io_dir / "inputs.json").write_text("{}")
    process = subprocess.Popen(
        [sys.executable, "-m", "gyoza.op", "sample:live"], cwd=sample_dir, env=_env(io_dir), stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while not (io_dir / "events.jsonl").exists() or not events(io_dir):
            assert process.poll() is None, "the op exited before the test released it"
            assert time.monotonic() < deadline, "no event appeared while the op was running"
            time.sleep(0.01)
        assert events(io_dir) == [{"type": "PROGRESS", "msg": 10}]
        (io_dir / "go").touch()
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_exception_writes_error_json_and_exits_1(sample_dir: Path, io_dir: Path) -> None:
    result = run_op(sample_dir, io_dir, "sample:boom", {})
    assert result.returncode == 1
    error = read_json(io_dir / "error.json")
    assert (error["message"], error["type"]) == ("bad input", "ValueError")
    assert 'raise ValueError("bad input")' in error["traceback"]
    assert "ValueError: bad input" in result.stderr  # the traceback also goes to the container log
    assert not (io_dir / "outputs.json").exists()


def test_missing_inputs_json_is_a_clear_error(sample_dir: Path, io_dir: Path) -> None:
    result = run_op(sample_dir, io_dir, "sample:add")
    assert result.returncode == 1
    error = read_json(io_dir / "error.json")
    assert error["type"] == "FileNotFoundError"
    assert f"{io_dir / 'inputs.json'} not found" in error["message"]


@pytest.mark.parametrize(("content", "problem"), [("[1, 2]", "must hold a JSON object, got array"), ("{", "not valid")])
def test_inputs_json_must_be_a_json_object(sample_dir: Path, io_dir: Path, content: str, problem: str) -> None:
    (io_dir / "inputs.json").write_text(content)
    result = run_op(sample_dir, io_dir, "sample:add")
    assert result.returncode == 1
    assert problem in read_json(io_dir / "error.json")["message"]


@pytest.mark.parametrize(
    ("op", "message"),
    [("returns_list", "must return a dict (or None), got array"), ("returns_nan", "not JSON-serialisable")],
)
def test_outputs_that_are_not_a_json_object_fail(sample_dir: Path, io_dir: Path, op: str, message: str) -> None:
    result = run_op(sample_dir, io_dir, f"sample:{op}", {})
    assert result.returncode == 1
    error = read_json(io_dir / "error.json")
    assert error["type"] == "OutputError"
    assert message in error["message"]
    assert not (io_dir / "outputs.json").exists()


def test_returning_none_means_empty_outputs(sample_dir: Path, io_dir: Path) -> None:
    result = run_op(sample_dir, io_dir, "sample:returns_none", {})
    assert result.returncode == 0, result.stderr
    assert read_json(io_dir / "outputs.json") == {}


def test_context_comes_from_the_worker_environment(sample_dir: Path, io_dir: Path) -> None:
    worker_env = {
        "GYOZA_RUN_ID": "run-1",
        "GYOZA_ATTEMPT": "2",
        "GYOZA_OP_NAME": "classify",
        "GYOZA_OP_VERSION": "1.0.0",
        "GYOZA_GPU_IDS": "0,2",
    }
    result = run_op(sample_dir, io_dir, "sample:whoami", {}, **worker_env)
    assert result.returncode == 0, result.stderr
    assert read_json(io_dir / "outputs.json") == {
        "run_id": "run-1",
        "attempt": 2,
        "op_name": "classify",
        "op_version": "1.0.0",
        "gpu_ids": [0, 2],
        "io_dir": str(io_dir),
    }


def test_bare_function_name_uses_gyoza_op_module(sample_dir: Path, io_dir: Path) -> None:
    # How an image runs it: ENTRYPOINT python3 -m gyoza.op, ENV GYOZA_OP_MODULE=ops, the op name as the command.
    result = run_op(sample_dir, io_dir, "not_decorated", {"x": 4}, GYOZA_OP_MODULE="sample")
    assert result.returncode == 0, result.stderr
    assert read_json(io_dir / "outputs.json") == {"x": 4}


@pytest.mark.parametrize(
    ("target", "error_type"),
    [("sample:nope", "AttributeError"), ("no_such_module:f", "ModuleNotFoundError"), ("add", "ValueError")],
)
def test_an_unloadable_target_is_reported_like_an_op_failure(
    sample_dir: Path, io_dir: Path, target: str, error_type: str
) -> None:
    result = run_op(sample_dir, io_dir, target, {})
    assert result.returncode == 1
    assert read_json(io_dir / "error.json")["type"] == error_type


def test_no_target_prints_usage(sample_dir: Path, io_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gyoza.op"], cwd=sample_dir, env=_env(io_dir), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "usage: python -m gyoza.op module:function" in result.stderr


def test_run_in_a_script_exits_with_the_attempts_code(sample_dir: Path, io_dir: Path) -> None:
    (io_dir / "inputs.json").write_text("{}")
    result = subprocess.run(
        [sys.executable, "sample.py"], cwd=sample_dir, env=_env(io_dir), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1  # sample.py's __main__ runs boom()
    assert read_json(io_dir / "error.json")["message"] == "bad input"


def test_progress_and_info_validate_and_work_outside_an_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gyoza.op import info, progress

    for bad in (101, -1, float("nan")):
        with pytest.raises(ValueError, match="from 0 to 100"):
            progress(bad)
    with pytest.raises(TypeError):
        progress(True)
    # Outside a worker (no IO directory) the op function stays callable: events go to stderr instead.
    monkeypatch.setenv("GYOZA_IO_DIR", str(tmp_path / "absent"))
    progress(42.9)
    info({"loaded": 1})
    assert capsys.readouterr().err.splitlines() == [
        '{"type":"PROGRESS","msg":42}',
        '{"type":"INFO","msg":"{\'loaded\': 1}"}',
    ]


def test_importing_gyoza_op_loads_only_the_standard_library() -> None:
    script = (
        "import json, sys; before = set(sys.modules); import gyoza.op; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(result.stdout)
    assert "gyoza.op._runner" in loaded  # the import really happened in this interpreter
    foreign = [name for name in loaded if name.split(".")[0] not in sys.stdlib_module_names | {"gyoza"}]
    assert foreign == []
    allowed = {"gyoza", "gyoza.op"} | {f"gyoza.op.{module.stem}" for module in (ROOT / "gyoza" / "op").glob("_*.py")}
    assert {name for name in loaded if name.startswith("gyoza")} <= allowed  # no server-side gyoza module
    assert not {"pydantic", "httpx", "quart", "nats", "docker", "typer"} & set(loaded)


# Runs the op with no site-packages at all: -I (isolated: no PYTHON* env, no user site, no cwd on sys.path) and
# -S (no site module, so neither the venv's nor the system's site-packages). sys.path is the interpreter's standard
# library plus the two directories we add, and a third-party package is proven unimportable before the op runs.
_BARE_BOOTSTRAP = """
import importlib.util, runpy, sys
sdk, work, target = sys.argv[1:]
assert not any("-packages" in entry for entry in sys.path), sys.path
assert importlib.util.find_spec("pydantic") is None
sys.path[:0] = [sdk, work]
sys.argv = ["gyoza.op", target]
runpy.run_module("gyoza.op", run_name="__main__", alter_sys=True)
"""


def test_the_sdk_runs_from_a_copy_with_only_the_standard_library(tmp_path: Path, sample_dir: Path) -> None:
    # What `gyoza op build` does: copy gyoza/__init__.py and gyoza/op/ into an image that has only python3.
    sdk = tmp_path / "sdk"
    (sdk / "gyoza").mkdir(parents=True)
    shutil.copy(ROOT / "gyoza" / "__init__.py", sdk / "gyoza")
    shutil.copytree(ROOT / "gyoza" / "op", sdk / "gyoza" / "op", ignore=shutil.ignore_patterns("__pycache__"))
    io = tmp_path / "io"
    io.mkdir()
    (io / "inputs.json").write_text('{"steps": 2}')
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _BARE_BOOTSTRAP, str(sdk), str(sample_dir), "sample:report"],
        env={"GYOZA_IO_DIR": str(io), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert read_json(io / "outputs.json") == {"done": True}
    assert [event["msg"] for event in events(io) if event["type"] == "PROGRESS"] == [0, 50, 100]
