"""Warm instances with the real Docker worker (issue 13.1): a definition with ``keep_warm_seconds`` keeps its op's
container up between runs, so ``setup()`` (the model load) runs once per instance and each later run is served at
once. What a user sees is checked: outputs from the same loaded process, each run's own log, and that a failing run
fails alone, a crash fails only its attempt, cancel and timeout stop the instance, an idle instance expires and makes
room, and no container outlives the worker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gyoza.worker.runtimes.docker import LABEL_INSTANCE, LABEL_WORKER
from tests.dockerimages import BUSYBOX, PYOP
from tests.simworker import Cluster, get_run, wait_run
from tests.waiting import until
from tests.workerproc import WorkerProcess, containers, remove_leftover_containers, unique_worker_name

pytestmark = pytest.mark.usefixtures("pyop_image")

TAG = "warm-e2e"
INPUTS = {"crash": {"type": "bool", "required": False}, "fail": {"type": "bool", "required": False},
          "seconds": {"type": "float", "required": False}, "note": {"type": "string", "required": False}}  # fmt: skip


@pytest.fixture(scope="module")
async def worker(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WorkerProcess]:
    root = tmp_path_factory.mktemp("warm-worker")
    process = WorkerProcess(unique_worker_name("warm"), root / "work", cluster.url, tags=(TAG,), ram_mb=4096)
    await process.start(http)
    yield process
    process.stop()
    # The worker ends its instances when it stops; anything left here is a leak, removed but reported.
    leftovers = remove_leftover_containers(process.name)
    assert not leftovers, f"containers left behind by worker {process.name}: {leftovers}"


def instances(worker: WorkerProcess) -> list[Any]:
    return containers(**{LABEL_WORKER: worker.name, LABEL_INSTANCE: None})


async def deploy(http: httpx.AsyncClient, image: str = PYOP, **fields: Any) -> str:
    name = "warm-" + uuid.uuid4().hex[:8]
    body = {"name": name, "version": "1.0.0", "image": image, "command": ["ops:warm"], "tags": [TAG],
            "keep_warm_seconds": 60, "env": {"SETUP_SECONDS": "0.5"}, "input_specs": INPUTS, **fields}  # fmt: skip
    response = await http.post("/definitions", json=body)
    assert response.status_code == 201, response.text
    return name


async def submit(http: httpx.AsyncClient, name: str, **body: Any) -> str:
    response = await http.post(f"/definitions/{name}/runs", json=body)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


async def serve(http: httpx.AsyncClient, name: str, state: str = "COMPLETED", **inputs: Any) -> dict[str, Any]:
    run = await wait_run(http, await submit(http, name, inputs=inputs), 60, state=state)
    return run


def setups(worker: WorkerProcess, name: str) -> int:
    log = worker.work_dir.parent / "cache" / name / "setups.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


async def test_an_instance_sets_up_once_and_serves_run_after_run(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    name = await deploy(http)
    runs = [await serve(http, name, note=f"run {n}") for n in range(3)]
    outputs = [run["outputs"] for run in runs]
    assert len({o["pid"] for o in outputs}) == 1 and [o["served"] for o in outputs] == [1, 2, 3]
    assert setups(worker, name) == 1
    assert [o["run_id"] for o in outputs] == [run["id"] for run in runs]
    assert all(o["io_dir"] == f"/gyoza/attempts/{o['run_id']}-1" for o in outputs)
    assert [e["msg"] for e in runs[2]["events"] if e["type"] == "PROGRESS"] == [50]
    for n, run in enumerate(runs):  # each run's log holds its own lines only
        text = (await http.get(f"/runs/{run['id']}/logs")).text
        assert f"serving {run['id']} run {n}" in text
        assert all(other["id"] not in text for other in runs if other is not run)

    async def listed() -> list[tuple[str, bool, list[int]]]:  # as the worker's next heartbeat says
        view = (await http.get(f"/workers/{worker.name}")).json()
        return [(i["version"], i["busy"], i["gpu_ids"]) for i in view["warm"] if i["definition"] == name]

    await until(lambda: _is(listed(), [("1.0.0", False, [])]), 15, what="the idle instance in GET /workers")


async def test_a_failing_run_fails_alone_and_a_crash_only_its_attempt(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    name = await deploy(http)
    first = (await serve(http, name))["outputs"]
    failed = await serve(http, name, state="FAILED", fail=True)
    assert (failed["state_reason"]["code"], failed["state_reason"]["message"]) == ("EXIT_CODE", "ValueError: bad input")
    assert (await serve(http, name))["outputs"]["pid"] == first["pid"]  # the same instance took the next run

    crashed = await serve(http, name, state="FAILED", crash=True)
    assert crashed["state_reason"]["code"] == "EXIT_CODE" and crashed["execution_summary"]["exit_code"] == 7
    assert f"serving {crashed['id']}" in (await http.get(f"/runs/{crashed['id']}/logs")).text
    after = (await serve(http, name))["outputs"]
    assert after["served"] == 1 and setups(worker, name) == 2  # a new instance, set up afresh


async def test_cancel_and_timeout_stop_the_instance_like_a_cold_container(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    name = await deploy(http)
    await serve(http, name)
    busy = await submit(http, name, inputs={"seconds": 60})
    await wait_run(http, busy, 30, state="RUNNING")
    assert (await http.post(f"/runs/{busy}/cancel")).status_code == 200
    await wait_run(http, busy, 30, state="CANCELLED")
    await until(lambda: not instances_of(worker, name), 15, what="the cancelled run's instance stopped")

    slow = await submit(http, name, inputs={"seconds": 60}, timeout_seconds=2)
    timed_out = await wait_run(http, slow, 60, state="FAILED")
    assert timed_out["state_reason"]["code"] == "TIMEOUT"
    assert (await serve(http, name))["outputs"]["served"] == 1  # started afresh after the stop
    assert setups(worker, name) == 3


async def test_a_failing_setup_fails_the_run_that_waited_for_it(http: httpx.AsyncClient, worker: WorkerProcess) -> None:
    name = await deploy(http, env={"SETUP_FAILS": "1"})
    failed = await serve(http, name, state="FAILED")
    assert failed["state_reason"]["message"] == "RuntimeError: could not load the model"
    assert "could not load the model" in (await http.get(f"/runs/{failed['id']}/logs")).text


async def test_an_image_that_cannot_serve_fails_with_a_clear_reason(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    name = await deploy(http, image=BUSYBOX, command=["true"])
    failed = await serve(http, name, state="FAILED")
    assert "needs an op that serves attempts (GYOZA_SERVE=1)" in failed["state_reason"]["message"]


async def test_an_idle_instance_expires_and_gives_way_to_a_run_that_needs_its_room(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    brief = await deploy(http, keep_warm_seconds=1)
    await serve(http, brief)
    await until(lambda: not instances_of(worker, brief), 15, what="the idle instance expired")

    big = await deploy(http, constraints={"ram_mb": 3000})
    await serve(http, big)
    assert len(instances_of(worker, big)) == 1
    cold = await http.post("/runs", json={"image": PYOP, "command": ["ops:echo"], "inputs": {"x": 1}, "tags": [TAG],
                                          "constraints": {"ram_mb": 3000}})  # fmt: skip
    assert (await wait_run(http, cold.json()["id"], 60, state="COMPLETED"))["outputs"] == {"x": 1}
    assert not instances_of(worker, big)  # 3000 + 3000 MB is more than the worker's 4096: the idle one made room


def instances_of(worker: WorkerProcess, name: str) -> list[Any]:
    """The instance containers of one definition (its cache mount names it)."""
    return [c for c in instances(worker) if any(name in str(m.get("Source")) for m in c.attrs.get("Mounts") or [])]


async def test_max_instances_bounds_the_runs_at_once_and_the_instances(
    http: httpx.AsyncClient, worker: WorkerProcess
) -> None:
    name = await deploy(http, max_instances=1)
    run_ids = [await submit(http, name, inputs={"seconds": 0.5}) for _ in range(3)]
    waiting = await until(lambda: _pending_reason(http, run_ids), 30, what="a run held back by max_instances")
    assert waiting == f"definition {name} (max_instances): 1/1 assigned or running"
    done = await asyncio.gather(*(wait_run(http, run_id, 60, state="COMPLETED") for run_id in run_ids))
    assert len({run["outputs"]["pid"] for run in done}) == 1 and setups(worker, name) == 1


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _pending_reason(http: httpx.AsyncClient, run_ids: list[str]) -> str | None:
    for run_id in run_ids:
        run = await get_run(http, run_id)
        if run["state"] == "PENDING" and run["state_reason"]["code"] == "CONCURRENCY_LIMIT":
            message: str = run["state_reason"]["message"]
            return message
    return None


async def test_a_restarted_worker_removes_the_instances_a_killed_life_left(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    process = WorkerProcess(unique_worker_name("warm-kill"), tmp_path / "work", cluster.url, tags=("warm-kill",))
    await process.start(http)
    try:
        name = "warm-" + uuid.uuid4().hex[:8]
        body = {"name": name, "version": "1.0.0", "image": PYOP, "command": ["ops:warm"], "tags": ["warm-kill"],
                "keep_warm_seconds": 600, "input_specs": INPUTS}  # fmt: skip
        assert (await http.post("/definitions", json=body)).status_code == 201
        await serve(http, name)
        assert len(instances(process)) == 1
        process.kill9()  # its idle instance stays behind, serving nobody
        assert len(instances(process)) == 1
        await process.start(http)
        assert not instances(process)  # removed before the restarted worker took any work
        assert (await serve(http, name))["outputs"]["served"] == 1  # a new instance, set up afresh
    finally:
        process.stop()
        leftovers = remove_leftover_containers(process.name)
    assert not leftovers, f"containers left behind by worker {process.name}: {leftovers}"
