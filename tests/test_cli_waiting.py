"""Waiting on runs with the CLI (issue 14.5): ``run --wait`` and ``runs watch`` show why a run waits as it changes
and a pending cancel, ``--timeout`` and Ctrl-C stop the waiting (never the run) and say so, and ``deploy`` / ``run``
warn when no current worker could ever fit the constraints.

A private cluster (``cluster``) with simulated workers (``fleet``): each test's runs carry a tag only its own workers
have, so what the scheduler says about them depends on those workers alone.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cliproc import Lines, failed, gyoza_cli, ok, spawn
from tests.simworker import Cluster, Fleet
from tests.waiting import until

EXIT_TIMEOUT, EXIT_INTERRUPTED = 4, 130
TOO_MANY_CPUS = 1000  # the simulated workers offer 4


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty GYOZA_DATA_DIR for every CLI call, so ~/.gyoza is never read."""
    path = tmp_path / "home"
    path.mkdir()
    return path


async def define(http: httpx.AsyncClient, tag: str, cpu: float) -> str:
    name = "wait-" + uuid.uuid4().hex[:8]
    body: dict[str, Any] = {"name": name, "version": "1.0.0", "image": "busybox", "constraints": {"cpu": cpu}}
    response = await http.post("/definitions", json={**body, "tags": [tag]})
    assert response.status_code in (200, 201), response.text
    return name


async def only_run(http: httpx.AsyncClient, name: str) -> dict[str, Any]:
    async def listed() -> list[dict[str, Any]]:
        return list((await http.get("/runs", params={"op_definition": name})).json()["data"])

    [run] = await until(listed, 10, what=f"the run of {name} in the index")
    return run


async def cli(cluster: Cluster, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # In a thread: the simulated workers heartbeat on this event loop, and a blocked loop would get them evicted.
    return await asyncio.to_thread(gyoza_cli, cluster.servers[0], home, *args)


def ok_stderr(result: subprocess.CompletedProcess[str]) -> str:
    ok(result)
    return result.stderr


async def test_run_wait_times_out_showing_why_the_run_cannot_be_placed(
    cluster: Cluster, http: httpx.AsyncClient, fleet: Fleet, tag: str, home: Path
) -> None:
    await fleet.add("small", cpu=4, tags=[tag])
    name = await define(http, tag, cpu=TOO_MANY_CPUS)

    result = await cli(cluster, home, "run", name, "--wait", "--timeout", "5")
    stderr = failed(result, EXIT_TIMEOUT, "warning: no current worker could ever fit run", "timed out after 5 s")
    assert "pending: NO_WORKER_LARGE_ENOUGH: needs cpu 1000" in stderr, "the scheduler's reason, live while waiting"
    run = await only_run(http, name)
    assert f"run {run['id']} is still PENDING" in stderr and "continues on the server" in stderr
    assert run["state"] == "PENDING", "the timeout stops the waiting, not the run"

    # `runs watch` shows the reason in its timeline; with --json the events stay alone on stdout.
    watched = await cli(cluster, home, "runs", "watch", run["id"], "--timeout", "1")
    failed(watched, EXIT_TIMEOUT, "continues on the server")
    assert any("#1 PENDING" in line and "NO_WORKER_LARGE_ENOUGH" in line for line in watched.stdout.splitlines()), (
        watched.stdout
    )
    as_json = await cli(cluster, home, "runs", "watch", run["id"], "--timeout", "1", "--json")
    failed(as_json, EXIT_TIMEOUT, "NO_WORKER_LARGE_ENOUGH")
    assert "NO_WORKER_LARGE_ENOUGH" not in as_json.stdout and '"type":"CREATED"' in as_json.stdout


async def test_run_and_deploy_warn_when_no_current_worker_could_ever_fit(
    cluster: Cluster, http: httpx.AsyncClient, fleet: Fleet, tag: str, home: Path, tmp_path: Path
) -> None:
    await fleet.add("small", cpu=4, tags=[tag])
    fits, too_big = await define(http, tag, cpu=2), await define(http, tag, cpu=TOO_MANY_CPUS)
    assert "warning" not in ok_stderr(await cli(cluster, home, "run", fits))
    stderr = ok_stderr(await cli(cluster, home, "run", too_big))
    assert "warning: no current worker could ever fit run " in stderr and "NO_WORKER_LARGE_ENOUGH" in stderr
    untagged = ok_stderr(await cli(cluster, home, "run", await define(http, "nowhere", cpu=1)))
    assert "NO_WORKER_WITH_TAGS: no online worker has all tags: nowhere" in untagged

    op = "deploy-" + uuid.uuid4().hex[:8]
    ok(await asyncio.to_thread(gyoza_cli, None, home, "op", "init", op, "--dir", str(tmp_path / op)))
    opfile = tmp_path / op / "gyoza.yml"
    opfile.write_text(opfile.read_text().replace("cpu: 0.5", f"cpu: {TOO_MANY_CPUS}") + f"tags: [{tag}]\n")
    deployed = await cli(cluster, home, "deploy", "--no-build", "--file", str(opfile))
    assert f"Deployed {op} 0.1.0" in ok(deployed), "a warning, not an error"
    assert f"warning: no current worker could ever fit {op} 0.1.0: NO_WORKER_LARGE_ENOUGH" in deployed.stderr


async def test_a_pending_cancel_shows_in_get_list_and_wait(
    cluster: Cluster, http: httpx.AsyncClient, fleet: Fleet, tag: str, home: Path
) -> None:
    worker = await fleet.add("runner", cpu=4, tags=[tag])
    name = await define(http, tag, cpu=1)
    waiting = spawn(cluster.servers[0], home, "run", name, "--wait")
    try:
        stderr = Lines(waiting.stderr)
        [assignment] = await until(lambda: worker.claim(wait=1), 20, what="the run assigned to the worker")
        run_id, attempt = assignment["run_id"], assignment["attempt"]
        assert (await worker.report(run_id, attempt, "STARTED")).status_code == 200

        cancelled = ok(await cli(cluster, home, "runs", "cancel", run_id))
        assert "RUNNING (cancel requested, waiting for the worker to stop it)" in cancelled
        got = ok(await cli(cluster, home, "runs", "get", run_id))
        assert "cancel requested, waiting for the worker to stop it" in got
        listed = ok(await cli(cluster, home, "runs", "list", "--op", name))
        assert "RUNNING (cancel requested)" in listed
        await until(lambda: stderr.having("running: cancel requested, waiting for the worker"), 20, what="--wait")

        assert (await worker.report(run_id, attempt, "CANCELLED")).status_code == 200
        assert await asyncio.to_thread(waiting.wait, 30) == 1
    finally:
        waiting.kill()
    assert "CANCELLED: USER" in stderr.text()
    after = ok(await cli(cluster, home, "runs", "get", run_id))
    assert "cancel requested" not in after, "once CANCELLED nothing is pending"


@pytest.mark.parametrize("command", ["run", "watch"])
async def test_ctrl_c_detaches_and_says_the_run_continues(
    cluster: Cluster, http: httpx.AsyncClient, fleet: Fleet, tag: str, home: Path, command: str
) -> None:
    await fleet.add("small", cpu=4, tags=[tag])
    name = await define(http, tag, cpu=TOO_MANY_CPUS)
    if command == "run":
        args = ["run", name, "--wait"]
    else:
        created = await http.post(f"/definitions/{name}/runs", json={})
        args = ["runs", "watch", created.json()["id"]]
    waiting = spawn(cluster.servers[0], home, *args)
    try:
        out = Lines(waiting.stderr if command == "run" else waiting.stdout)
        err = out if command == "run" else Lines(waiting.stderr)
        # What each prints as it starts following (the run line of --wait, the CREATED event of watch).
        started = f"({name}:1.0.0)" if command == "run" else "CREATED"
        await until(lambda: out.having(started), 20, what="the CLI following the run")
        waiting.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(waiting.wait, 20) == EXIT_INTERRUPTED
    finally:
        waiting.kill()
    run = await only_run(http, name)
    message = f"detached; run {run['id']} continues on the server (gyoza runs watch {run['id']})"
    assert message in err.text() and "Traceback" not in err.text()
    assert run["state"] == "PENDING"
