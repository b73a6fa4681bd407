"""``gyoza server start --workers 2``: two server processes on one port and one embedded NATS, as a user runs it.

Every request goes on a fresh connection, so the kernel picks the process anew each time (SO_REUSEPORT).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gyoza.server.indexfile import IndexFile
from tests.processes import API_KEY, GyozaServer, child_pids, free_port, pid_alive
from tests.simworker import FAST_SETTINGS, SimWorker, unique_tag
from tests.waiting import until

pytestmark = pytest.mark.timeout(120)


def start_pool(data_dir: Path, port: int | None = None) -> GyozaServer:
    return GyozaServer(data_dir, nats_url=None, port=port, workers=2, **FAST_SETTINGS).start()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GyozaServer]:
    server = start_pool(tmp_path_factory.mktemp("pool"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def fresh(pool: GyozaServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client that opens a new connection for every request."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=pool.url, headers={"X-API-Key": API_KEY}, timeout=30, limits=limits) as c:
        yield c


def python_children(server: GyozaServer) -> set[int]:
    """The pool's server processes (the parent's children other than the nats-server)."""
    children = set(child_pids(server.pid))
    return {pid for pid in children if b"nats-server" not in Path(f"/proc/{pid}/cmdline").read_bytes()}


async def health_by_pid(http: httpx.AsyncClient) -> dict[int, str]:
    """GET /health on fresh connections until both processes answered: pid -> its scheduler role. (The server
    answers once one process does; the other may still be starting.)"""
    seen: dict[int, str] = {}

    async def both() -> bool:
        body = (await http.get("/health")).json()
        seen[body["pid"]] = body["scheduler"]
        return len(seen) >= 2

    await until(both, timeout=15, interval=0, what="both processes answering /health")
    return seen


async def test_both_processes_answer_on_one_port(pool: GyozaServer, fresh: httpx.AsyncClient) -> None:
    seen = await health_by_pid(fresh)
    assert set(seen) == python_children(pool), "both child processes answer, and only they do"
    assert pool.pid not in seen
    health = (await fresh.get("/health")).json()
    assert health["nats"]["mode"] == "embedded", "the parent runs the embedded nats-server the processes share"


async def test_exactly_one_process_is_the_scheduler_leader(fresh: httpx.AsyncClient) -> None:
    roles = await until(
        lambda: _settled_roles(fresh), timeout=15, what="one leader and one standby among the two processes"
    )
    assert sorted(roles.values()) == ["leader", "standby"]


async def _settled_roles(http: httpx.AsyncClient) -> dict[int, str] | None:
    roles = await health_by_pid(http)
    return roles if sorted(roles.values()) == ["leader", "standby"] else None


async def test_a_created_run_is_listed_by_whichever_process_answers_next(fresh: httpx.AsyncClient) -> None:
    for i in range(60):
        image = f"sim/ryw-{uuid.uuid4().hex[:8]}:{i}"
        created = await fresh.post("/runs", json={"image": image, "tags": [unique_tag()]})
        assert created.status_code == 201, created.text
        listed = await fresh.get("/runs", params={"image": image})
        assert listed.status_code == 200, listed.text
        assert [run["id"] for run in listed.json()["data"]] == [created.json()["id"]], f"attempt {i}"


async def test_claim_long_polls_on_every_process_get_the_assignment(pool: GyozaServer) -> None:
    tag = unique_tag()
    worker = await SimWorker(pool.url, f"w-{tag}", tags=[tag]).start()
    limits = httpx.Limits(max_keepalive_connections=0)
    polls = [
        httpx.AsyncClient(base_url=pool.url, headers={"X-API-Key": API_KEY}, timeout=30, limits=limits)
        for _ in range(12)
    ]
    try:
        claims = [asyncio.create_task(p.post(f"/workers/{worker.worker_id}/claim", params={"wait": 20})) for p in polls]
        await asyncio.sleep(0)  # the requests are on their way before the run exists
        created = await polls[0].post("/runs", json={"image": "sim/op:1", "tags": [tag]})
        assert created.status_code == 201, created.text
        answers = await asyncio.gather(*claims)
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert [a["run_id"] for a in answer.json()["data"]] == [created.json()["id"]]
    finally:
        for p in polls:
            await p.aclose()
        await worker.close()


def test_a_second_server_on_the_same_data_dir_is_refused(pool: GyozaServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYOZA_")}
    env.update(GYOZA_DATA_DIR=str(pool.data_dir), GYOZA_PORT=str(free_port()), GYOZA_API_KEY="k",
               GYOZA_SERVER_WORKERS="2")  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "gyoza", "server", "start"], env=env, capture_output=True,
                            text=True, timeout=30)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "is in use by pid" in result.stderr


def pool_pids(server: GyozaServer) -> set[int]:
    """The parent's children: the two server processes and the nats-server."""
    pids = set(child_pids(server.pid))
    assert len(pids) == 3, pids
    return pids


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
async def test_a_stop_signal_stops_every_process_and_nats(tmp_path: Path, sig: signal.Signals) -> None:
    server = start_pool(tmp_path / "gyoza")
    pids = pool_pids(server)
    assert server.process is not None
    server.process.send_signal(sig)
    assert server.process.wait(30) == 0
    assert not [pid for pid in pids if pid_alive(pid)]
    assert_index_files_kept_and_free(tmp_path / "gyoza" / "index")


def assert_index_files_kept_and_free(directory: Path) -> None:
    """One index file per process, kept for the next start, and no lock left on them."""
    assert {p.name for p in directory.glob("*.sqlite")} == {"runs-0.sqlite", "runs-1.sqlite"}
    claims = [IndexFile.claim(directory), IndexFile.claim(directory)]
    assert [c.path.name for c in claims] == ["runs-0.sqlite", "runs-1.sqlite"], "a lock outlived its process"
    for claim in claims:
        claim.release()


async def test_kill_9_of_the_parent_leaves_nothing_behind(tmp_path: Path) -> None:
    server = start_pool(tmp_path / "gyoza")
    pids = pool_pids(server)
    try:
        server.kill9()
        await until(lambda: not any(pid_alive(pid) for pid in pids), timeout=10, what="children gone after kill -9")
    finally:
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    # The data dir is free again: a new pool starts on it, and its processes take over the old ones' index files.
    restarted = start_pool(tmp_path / "gyoza", server.port)
    try:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=restarted.url, limits=limits) as http:
            await health_by_pid(http)  # both processes serve, so both hold their index
        indexes = list((tmp_path / "gyoza" / "index").glob("*.sqlite"))
        assert {p.name for p in indexes} == {"runs-0.sqlite", "runs-1.sqlite"}
    finally:
        restarted.stop()


async def test_a_server_process_that_dies_stops_the_server(tmp_path: Path) -> None:
    server = start_pool(tmp_path / "gyoza")
    pids = pool_pids(server)
    assert server.process is not None
    os.kill(sorted(python_children(server))[0], signal.SIGKILL)
    assert server.process.wait(30) == 1
    assert "exited with -9" in server.log_path.read_text()
    assert not [pid for pid in pids if pid_alive(pid)]
