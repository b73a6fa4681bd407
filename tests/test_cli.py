"""The ``gyoza`` CLI as users run it (SPEC §9): ``python -m gyoza ...`` subprocesses against a private server with one
Docker worker. Checks what a terminal or a script sees: tables, ``--json`` that parses, and the exit codes scripts
rely on (0 ok, 1 run failed/cancelled, 2 usage error, 3 server error) with the server's code and no traceback.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gyoza.client import GyozaClient
from gyoza.schema import OpRun
from tests.cliproc import failed, gyoza_cli, ok, spawn
from tests.dockerimages import PYOP, require_images
from tests.processes import API_KEY, GyozaServer, free_port
from tests.waiting import until
from tests.workerproc import WorkerProcess, remove_leftover_containers, start_server, unique_worker_name

SPECS = {
    "n": {"type": "int"}, "x": {"type": "float"}, "flag": {"type": "bool"}, "obj": {"type": "object"},
    "arr": {"type": "array"}, "s": {"type": "string"}, "a": {"type": "any"},
}  # fmt: skip
PROGRESS_SPECS = {"steps": {"type": "int"}, "delay": {"type": "float"}}


@pytest.fixture(scope="module")
def gyoza(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GyozaServer]:
    server = start_server(tmp_path_factory.mktemp("cli"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def worker(gyoza: GyozaServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WorkerProcess]:
    require_images(PYOP)
    name = unique_worker_name("cli")
    process = WorkerProcess(name, tmp_path_factory.mktemp("cli-worker") / "work", gyoza.url, stop_grace=1.0)
    async with httpx.AsyncClient(base_url=gyoza.url, headers={"X-API-Key": API_KEY}, timeout=30) as http:
        await process.start(http)
    yield process
    process.stop()
    assert not remove_leftover_containers(name), "every attempt removes its container"


@pytest.fixture(scope="module")
def sdk(gyoza: GyozaServer) -> Iterator[GyozaClient]:
    with GyozaClient(gyoza.url, API_KEY) as client:
        yield client


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty GYOZA_DATA_DIR for every CLI call, so ~/.gyoza is never read."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def deploy(sdk: GyozaClient, op: str, **fields: Any) -> str:
    name = f"cli-{op.replace('_', '-')}-" + uuid.uuid4().hex[:8]
    definition = {"name": name, "version": "1.0.0", "image": PYOP, "command": [f"ops:{op}"], **fields}
    sdk.deploy_definition(definition)
    return name


def test_definitions_list_and_get_as_tables_and_json(gyoza: GyozaServer, sdk: GyozaClient, home: Path) -> None:
    name = deploy(sdk, "echo", input_specs={"n": {"type": "int"}}, description="echo for the cli test")
    sdk.deploy_definition({"name": name, "version": "2.0.0", "image": PYOP, "command": ["ops:echo"]})

    table = ok(gyoza_cli(gyoza, home, "definitions", "list"))
    line = next(row for row in table.splitlines() if row.startswith(name))
    assert "2.0.0" in line and "1.0.0" not in line, "the list shows the latest version"
    listed = json.loads(ok(gyoza_cli(gyoza, home, "definitions", "list", "--json")))
    assert {d["name"]: d["version"] for d in listed["data"]}[name] == "2.0.0"
    every = json.loads(ok(gyoza_cli(gyoza, home, "definitions", "list", "--all-versions", "--json")))
    assert sorted(d["version"] for d in every["data"] if d["name"] == name) == ["1.0.0", "2.0.0"]

    got = json.loads(ok(gyoza_cli(gyoza, home, "definitions", "get", name, "--version", "1.0.0", "--json")))
    assert (got["name"], got["version"], got["input_specs"]["n"]["type"]) == (name, "1.0.0", "int")
    assert got == sdk.get_definition(name, "1.0.0").model_dump(mode="json")
    detail = ok(gyoza_cli(gyoza, home, "definitions", "get", name, "--version", "1.0.0"))
    assert "echo for the cli test" in detail and "input n" in detail


async def test_run_wait_shows_progress_then_prints_the_outputs(
    gyoza: GyozaServer, sdk: GyozaClient, worker: WorkerProcess, home: Path
) -> None:
    name = deploy(sdk, "progress", input_specs=PROGRESS_SPECS)
    result = gyoza_cli(gyoza, home, "run", name, "-i", "steps=3", "-i", "delay=0.2", "--wait")
    assert json.loads(ok(result)) == {"steps": 3}, "stdout holds only the outputs"
    assert "step 3/3" in result.stderr and "100%" in result.stderr and "COMPLETED" in result.stderr
    [run] = sdk.list_runs(op_definition=name).data
    assert run.inputs == {"steps": 3, "delay": 0.2}, "values typed by the specs: int and float, not strings"


def test_inputs_are_typed_by_the_definition_specs(gyoza: GyozaServer, sdk: GyozaClient, home: Path) -> None:
    name = deploy(sdk, "echo", input_specs=SPECS, tags=["nowhere"])  # no worker has the tag: it stays PENDING
    args = ["-i", "n=7", "-i", "x=2", "-i", "flag=false", "-i", 'obj={"k": [1]}', "-i", "arr=[1, 2]", "-i", "s=007",
            "-i", "a=plain text", "-i", "s=0042"]  # fmt: skip
    created = json.loads(ok(gyoza_cli(gyoza, home, "run", name, *args, "--priority", "9", "--json")))
    assert created["inputs"] == {"n": 7, "x": 2.0, "flag": False, "obj": {"k": [1]}, "arr": [1, 2], "s": "0042",
                                 "a": "plain text"}  # fmt: skip
    assert isinstance(created["inputs"]["x"], float) and created["priority"] == 9
    # Without --json the run id alone goes to stdout, so `ID=$(gyoza run ...)` works.
    run_id = ok(gyoza_cli(gyoza, home, "run", name, "-i", "a=[1]", "-i", "n=1", "-i", "x=1", "-i", "flag=yes",
                          "-i", "obj={}", "-i", "arr=[]", "-i", "s=x")).strip()  # fmt: skip
    run = sdk.get_run(run_id)
    assert run.inputs["a"] == [1] and run.inputs["flag"] is True


@pytest.mark.parametrize(
    ("argument", "named"),
    [("n=abc", "'n'"), ("x=1e999", "'x'"), ("flag=maybe", "'flag'"), ("obj=[1]", "'obj'"), ("arr={", "'arr'"),
     ("nope=1", "'nope'"), ("no-equals-sign", "no-equals-sign")],
)  # fmt: skip
def test_a_bad_input_is_a_usage_error_naming_it_and_creates_nothing(
    gyoza: GyozaServer, sdk: GyozaClient, home: Path, argument: str, named: str
) -> None:
    name = deploy(sdk, "echo", input_specs=SPECS, tags=["nowhere"])
    failed(gyoza_cli(gyoza, home, "run", name, "-i", argument), 2, named)
    assert sdk.list_runs(op_definition=name).data == []


@pytest.mark.parametrize(
    "args",
    [("runs", "list", "--limit", "0"), ("runs", "list", "--state", "SLEEPING"), ("runs", "frobnicate"),
     ("run", "x", "--priority", "101"), ("topics", "tail", "t", "--after", "-1"), ("runs", "get")],
)  # fmt: skip
def test_bad_flags_exit_2(gyoza: GyozaServer, home: Path, args: tuple[str, ...]) -> None:
    failed(gyoza_cli(gyoza, home, *args), 2)


async def test_a_failing_run_exits_1_with_its_reason(
    gyoza: GyozaServer, sdk: GyozaClient, worker: WorkerProcess, home: Path
) -> None:
    name = deploy(sdk, "fail")
    stderr = failed(gyoza_cli(gyoza, home, "run", name, "--wait"), 1, "FAILED", "EXIT_CODE", "bad input")
    assert "ValueError" in stderr

    result = gyoza_cli(gyoza, home, "run", name, "--wait", "--json")
    failed(result, 1)
    assert json.loads(result.stdout)["state"] == "FAILED", "--json prints the final run, parseable"
    run_id = json.loads(result.stdout)["id"]
    watched = gyoza_cli(gyoza, home, "runs", "watch", run_id)
    failed(watched, 1)
    assert "FAILED: EXIT_CODE" in watched.stdout


async def test_watch_follows_a_run_live_until_it_completes(
    gyoza: GyozaServer, sdk: GyozaClient, worker: WorkerProcess, home: Path
) -> None:
    name = deploy(sdk, "progress", input_specs=PROGRESS_SPECS)
    run = sdk.create_run(name, {"steps": 3, "delay": 0.3})
    lines = ok(gyoza_cli(gyoza, home, "runs", "watch", run.id)).splitlines()
    kinds = [line.split()[2] for line in lines[:-1]]
    assert kinds[0] == "CREATED" and kinds[-1] == "COMPLETED"
    assert kinds.index("STARTED") < kinds.index("PROGRESS") < kinds.index("COMPLETED")
    assert any("INFO" in line and "step 2/3" in line for line in lines)
    assert any("PROGRESS" in line and "100%" in line for line in lines)
    assert lines[-1] == 'outputs: {"steps": 3}'

    events = [json.loads(line) for line in ok(gyoza_cli(gyoza, home, "runs", "watch", run.id, "--json")).splitlines()]
    assert [e["id"] for e in events] == sorted({e["id"] for e in events}), "every event once, in order"
    assert events[-1]["type"] == "COMPLETED" and events[-1]["state"] == "COMPLETED"


async def test_cancel_ends_a_watch_with_exit_1_and_retry_starts_a_new_attempt(
    gyoza: GyozaServer, sdk: GyozaClient, worker: WorkerProcess, home: Path
) -> None:
    name = deploy(sdk, "sleep", input_specs={"seconds": {"type": "float"}})
    run = sdk.create_run(name, {"seconds": 600})
    watcher = spawn(gyoza, home, "runs", "watch", run.id)
    try:
        await until(lambda: sdk.get_run(run.id).state == "RUNNING", 30, interval=0.1, what="sleep op running")
        assert "cancel" in ok(gyoza_cli(gyoza, home, "runs", "cancel", run.id)).lower()
        stdout, stderr = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    assert watcher.returncode == 1, stderr
    assert "CANCELLED: USER" in stdout and "Traceback" not in stderr

    again = json.loads(ok(gyoza_cli(gyoza, home, "runs", "cancel", run.id, "--json")))
    assert again["state"] == "CANCELLED", "cancel is idempotent on CANCELLED"
    assert "attempt 2" in ok(gyoza_cli(gyoza, home, "runs", "retry", run.id))
    retried = sdk.get_run(run.id)
    assert retried.current_attempt == 2 and retried.state in ("PENDING", "ASSIGNED", "RUNNING")
    sdk.cancel_run(run.id)
    await until(lambda: sdk.get_run(run.id).state == "CANCELLED", 30, interval=0.1, what="second attempt cancelled")
    # Retry refused by the state machine: the server's 409 is exit 3 with its code.
    done = sdk.create_run(deploy(sdk, "echo"), {})
    sdk.wait(done.id, timeout=60)
    failed(gyoza_cli(gyoza, home, "runs", "retry", done.id), 3, "INVALID_TRANSITION")
    assert "deleted" in ok(gyoza_cli(gyoza, home, "runs", "delete", done.id))
    failed(gyoza_cli(gyoza, home, "runs", "delete", done.id), 3, "RUN_NOT_FOUND")


async def test_runs_list_get_and_logs(gyoza: GyozaServer, sdk: GyozaClient, worker: WorkerProcess, home: Path) -> None:
    name = deploy(sdk, "exit_code", input_specs={"code": {"type": "int"}, "message": {"type": "string"}})
    runs = [sdk.create_run(name, {"code": 4, "message": f"marker-{i}"}) for i in range(2)]
    finished = [sdk.wait(run.id, timeout=60) for run in runs]
    assert [run.state for run in finished] == ["FAILED", "FAILED"]

    listed = json.loads(ok(gyoza_cli(gyoza, home, "runs", "list", "--op", name, "--json")))
    assert listed["object"] == "list" and [r["id"] for r in listed["data"]] == [r.id for r in reversed(runs)]
    one = json.loads(ok(gyoza_cli(gyoza, home, "runs", "list", "--op", name, "--limit", "1", "--json")))
    assert len(one["data"]) == 1 and one["has_more"] is True
    assert (
        json.loads(ok(gyoza_cli(gyoza, home, "runs", "list", "--op", name, "--state", "completed", "--json")))["data"]
        == []
    )
    table = ok(gyoza_cli(gyoza, home, "runs", "list", "--op", name, "--state", "FAILED"))
    assert all(run.id in table for run in runs) and "EXIT_CODE" in table

    got = json.loads(ok(gyoza_cli(gyoza, home, "runs", "get", runs[0].id, "--json")))
    assert OpRun.model_validate(got) == sdk.get_run(runs[0].id)
    assert runs[0].id in ok(gyoza_cli(gyoza, home, "runs", "get", runs[0].id))

    assert "marker-0" in ok(gyoza_cli(gyoza, home, "runs", "logs", runs[0].id))
    logs = json.loads(ok(gyoza_cli(gyoza, home, "runs", "logs", runs[1].id, "--attempt", "1", "--json")))
    assert logs["attempt"] == 1 and "marker-1" in logs["logs"]
    failed(gyoza_cli(gyoza, home, "runs", "logs", runs[1].id, "--attempt", "5"), 3, "NOT_FOUND")


async def test_workers_list(gyoza: GyozaServer, worker: WorkerProcess, home: Path) -> None:
    table = ok(gyoza_cli(gyoza, home, "workers", "list"))
    assert any(line.split()[:2] == [worker.name, "ONLINE"] for line in table.splitlines())
    listed = json.loads(ok(gyoza_cli(gyoza, home, "workers", "list", "--json")))
    assert {w["id"]: w["status"] for w in listed["data"]}[worker.name] == "ONLINE"


async def test_topics_tail_reads_and_follows_a_feed(
    gyoza: GyozaServer, sdk: GyozaClient, worker: WorkerProcess, home: Path
) -> None:
    topic = "cli-" + uuid.uuid4().hex[:8]
    name = deploy(sdk, "echo", event_delivery={"topic": topic, "attributes": {"team": "cli"}})
    first = sdk.wait(sdk.create_run(name, {}).id, timeout=60)
    await until(lambda: gyoza_tail_types(gyoza, home, topic)[-1:] == ["COMPLETED"], 20, interval=0.2)
    page = json.loads(ok(gyoza_cli(gyoza, home, "topics", "tail", topic, "--json")))
    assert {e["run_id"] for e in page["data"]} == {first.id}
    assert page["next_cursor"] == page["data"][-1]["cursor"] and page["data"][0]["attributes"] == {"team": "cli"}
    after = json.loads(
        ok(gyoza_cli(gyoza, home, "topics", "tail", topic, "--after", str(page["next_cursor"]), "--json"))
    )
    assert after == {"data": [], "next_cursor": page["next_cursor"]}
    assert first.id in ok(gyoza_cli(gyoza, home, "topics", "tail", topic))

    follower = spawn(gyoza, home, "topics", "tail", topic, "--follow", "--json", "--after", str(page["next_cursor"]))
    try:
        second = sdk.create_run(name, {})
        assert follower.stdout is not None
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["type"] != "COMPLETED":
            line = await asyncio.wait_for(asyncio.to_thread(follower.stdout.readline), 30)
            seen.append(json.loads(line))
        follower.send_signal(signal.SIGINT)
        _, stderr = follower.communicate(timeout=20)
    finally:
        follower.kill()
    assert {e["run_id"] for e in seen} == {second.id}, "only events after the cursor, live"
    assert "Traceback" not in stderr


def gyoza_tail_types(gyoza: GyozaServer, home: Path, topic: str) -> list[str]:
    return [e["type"] for e in json.loads(ok(gyoza_cli(gyoza, home, "topics", "tail", topic, "--json")))["data"]]


def test_unreachable_server_exits_3_without_a_traceback(home: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    failed(gyoza_cli(None, home, "runs", "list", GYOZA_SERVER_URL=down, GYOZA_API_KEY="k"), 3, "UNAVAILABLE", down)
    failed(gyoza_cli(None, home, "--server", down, "workers", "list", "--json"), 3, "UNAVAILABLE")


def test_server_refusals_exit_3_with_the_server_code(gyoza: GyozaServer, sdk: GyozaClient, home: Path) -> None:
    missing = str(uuid.uuid4())
    failed(gyoza_cli(gyoza, home, "runs", "get", missing, "--json"), 3, "RUN_NOT_FOUND", missing)
    failed(gyoza_cli(gyoza, home, "definitions", "get", "no-such-op"), 3, "DEFINITION_NOT_FOUND")
    failed(gyoza_cli(gyoza, home, "run", "no-such-op", "-i", "a=1"), 3, "DEFINITION_NOT_FOUND")
    failed(gyoza_cli(gyoza, home, "workers", "list", GYOZA_API_KEY="wrong"), 3, "UNAUTHORIZED")
    # Inputs that parse but break the specs: the server's 400 lists every problem.
    name = deploy(sdk, "echo", input_specs={"n": {"type": "int", "min": 0}, "s": {"type": "string"}})
    failed(gyoza_cli(gyoza, home, "run", name, "-i", "n=-1"), 3, "INVALID_INPUTS", "inputs.n", "inputs.s")


def test_root_options_override_env_and_config(gyoza: GyozaServer, home: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    wrong_env = {"GYOZA_SERVER_URL": down, "GYOZA_API_KEY": "wrong"}
    failed(gyoza_cli(None, home, "workers", "list", **wrong_env), 3)
    ok(gyoza_cli(None, home, "--server", gyoza.url, "--api-key", API_KEY, "workers", "list", **wrong_env))
    # With nothing in the environment, `gyoza up`'s config.json in the data dir is used.
    (home / "config.json").write_text(json.dumps({"server_url": gyoza.url, "api_key": API_KEY}))
    ok(gyoza_cli(None, home, "workers", "list", "--json"))
    failed(gyoza_cli(None, home, "workers", "list", GYOZA_API_KEY="wrong"), 3, "UNAUTHORIZED")
