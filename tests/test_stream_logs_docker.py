"""``gyoza runs logs -f`` follows a real container's output live (issue 11), like ``docker logs -f``: a real worker
(Docker runtime, network none, REST and NATS mode) ships the lines as the op writes them, and the CLI prints them
while the op is still running, then exits when the run ends.

The op prints a line and then waits for a file the test creates in its /gyoza directory: the run cannot end before
the test lets it, so a line printed before that was printed while the op was running.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.cliproc import Lines, spawn
from tests.dockerimages import BUSYBOX, require_images
from tests.simworker import Cluster, get_run, wait_run
from tests.waiting import until
from tests.workerproc import WorkerProcess, remove_leftover_containers, unique_worker_name

GO_FILE = "go"
# Prints, waits for /gyoza/go (the test's signal), prints again, ends.
SCRIPT = f"echo first-line; echo to-stderr >&2; while [ ! -f /gyoza/{GO_FILE} ]; do sleep 0.1; done; echo last-line"


@pytest.fixture(scope="module")
def busybox_image() -> None:
    require_images(BUSYBOX)


@pytest.fixture(params=["rest", "nats"])
async def worker(
    request: pytest.FixtureRequest, busybox_image: None, cluster: Cluster, http: httpx.AsyncClient, tmp_path: Path
) -> AsyncIterator[WorkerProcess]:
    name = unique_worker_name(f"logs-{request.param}")
    env = {"GYOZA_NATS_URL": cluster.nats_url} if request.param == "nats" else {}
    process = WorkerProcess(name, tmp_path / "work", cluster.url, tags=(name,), env=env, mode=request.param)
    await process.start(http)
    yield process
    process.stop()
    assert not remove_leftover_containers(name), "every attempt removes its container"


async def test_logs_follow_prints_lines_while_the_op_runs_and_exits_when_it_ends(
    cluster: Cluster, http: httpx.AsyncClient, worker: WorkerProcess, tmp_path: Path
) -> None:
    body = {"image": BUSYBOX, "command": ["sh", "-c", SCRIPT], "tags": [worker.name]}
    response = await http.post("/runs", json=body)
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    await wait_run(http, run_id, 60, state="RUNNING")

    home = tmp_path / "home"
    home.mkdir()
    follower = spawn(cluster.servers[0], home, "runs", "logs", "-f", run_id)
    try:
        out, err = Lines(follower.stdout), Lines(follower.stderr)
        await until(lambda: out.having("first-line"), 30, interval=0.05, what="the first line, live")
        assert out.having("to-stderr"), "stderr is in the log too"
        assert (await get_run(http, run_id))["state"] == "RUNNING", "printed while the op was still running"
        assert follower.poll() is None, "still following"

        (worker.work_dir / f"{run_id}-1" / GO_FILE).write_text(uuid.uuid4().hex)
        code = await asyncio.to_thread(follower.wait, 60)
    except BaseException:
        follower.kill()
        raise
    assert code == 0, err.text()
    text = out.text()
    assert text.index("first-line") < text.index("last-line"), text
    assert " stdout first-line" in text and " stderr to-stderr" in text, "the lines as GET /runs/{id}/logs has them"
    assert (await get_run(http, run_id))["state"] == "COMPLETED"
    # The followed lines are the stored log's lines.
    stored = (await http.get(f"/runs/{run_id}/logs")).text
    assert sorted(text.splitlines()) == sorted(stored.splitlines())
