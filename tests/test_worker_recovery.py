"""Worker loss and comeback with real workers and Docker (SPEC §5.4-5.6, §6): a worker killed with -9 mid-run
loses its attempt to a healthy worker; when it returns under the same name, the container its previous life left
running is cancelled, and only one attempt of the run ever completes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.dockerimages import PYOP
from tests.simworker import Cluster, wait_run
from tests.waiting import until
from tests.workerproc import WorkerProcess, remove_leftover_containers, run_containers, unique_worker_name

# The Docker images are checked before the module's cluster starts (skip, or fail under GYOZA_REQUIRE_DOCKER=1).
pytestmark = pytest.mark.usefixtures("pyop_image")

TAG = "recovery-e2e"
# Long enough that attempt 1's container still runs when its worker returns (kill + 3 s eviction + restart) and that
# its removal can only be a cancel, short enough that attempt 2 completes in reasonable time.
SLEEP_S = 15


@pytest.fixture
def workers(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[WorkerProcess]]:
    root = tmp_path_factory.mktemp("recovery-workers")
    pair = [
        WorkerProcess(unique_worker_name(label), root / label, cluster.url, tags=(TAG,), stop_grace=2)
        for label in ("first", "second")
    ]
    yield pair
    for worker in pair:
        worker.stop()
    leftovers = remove_leftover_containers(*(worker.name for worker in pair))
    assert not leftovers, f"containers left behind: {leftovers}"


async def test_killed_worker_run_is_retried_elsewhere_and_its_orphan_cancelled(
    http: httpx.AsyncClient, workers: list[WorkerProcess]
) -> None:
    first, second = workers
    await first.start(http)  # alone, so attempt 1 surely lands on it
    body = {"image": PYOP, "command": ["ops:sleep"], "inputs": {"seconds": SLEEP_S}, "tags": [TAG]}
    response = await http.post("/runs", json=body)
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    run = await wait_run(http, run_id, 30, state="RUNNING")
    # The container started before this point, so left alone it ends no earlier than SLEEP_S from about now.
    natural_end = time.monotonic() + SLEEP_S - 1
    assert run["worker_id"] == first.name
    await second.start(http)

    first.kill9()
    # Eviction (3 s without heartbeats) fails attempt 1 with WORKER_LOST; worker loss is retried by default.
    run = await wait_run(http, run_id, 20, state="RUNNING", attempt=2)
    assert run["worker_id"] == second.name
    orphan = run_containers(run_id, attempt=1)
    assert [c.status for c in orphan] == ["running"], "attempt 1's container outlived its killed worker"

    await first.start(http)  # same name, same work dir: a restart
    # Gone before the op could have ended by itself: the returning worker cancelled it (heartbeat reply command).
    await until(
        lambda: not run_containers(run_id, attempt=1),
        max(natural_end - time.monotonic(), 0),
        interval=0.1,
        what="orphan of attempt 1 cancelled before its sleep ended",
    )
    assert run_containers(run_id, attempt=2), "attempt 2 on the healthy worker is untouched"

    run = await wait_run(http, run_id, SLEEP_S + 15, state="COMPLETED")
    assert run["current_attempt"] == 2
    assert run["outputs"] == {"slept": SLEEP_S}
    assert run["execution_summary"]["worker_id"] == second.name

    response = await http.get(f"/runs/{run_id}/attempts")
    assert response.status_code == 200
    attempts = response.json()["data"]
    assert [(a["number"], a["state"]) for a in attempts] == [(1, "FAILED"), (2, "COMPLETED")]
    assert attempts[0]["state_reason"]["code"] == "WORKER_LOST"
    completed = [e for a in attempts for e in a["events"] if e["type"] == "COMPLETED"]
    assert len(completed) == 1, "the orphan's end was never accepted as a second completion"
    await until(lambda: not run_containers(run_id), 10, interval=0.1, what="all containers of the run removed")
