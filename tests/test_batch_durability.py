"""A batch's 201 means every run of it is durable: all of them are back after a kill -9 of the server and its
embedded NATS right after the answers, and the batch's counts are rebuilt from KV."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from tests.processes import GyozaServer, pid_alive
from tests.test_durability import http, nats_child, summary
from tests.waiting import until

BATCHES = 8
RUNS_PER_BATCH = 250


async def test_every_acknowledged_batch_run_survives_kill9(data_dir: Path) -> None:
    first = GyozaServer(data_dir, None).start()
    acknowledged: dict[str, dict[str, Any]] = {}
    batch_ids: list[str] = []
    try:
        async with http(first) as client:

            async def one(b: int) -> None:
                items = [{"image": "busybox:1", "inputs": {"b": b, "n": n}} for n in range(RUNS_PER_BATCH)]
                response = await client.post("/runs/batch", json={"runs": items})
                assert response.status_code == 201, response.text
                batch_ids.append(response.json()["batch_id"])
                acknowledged.update({run["id"]: run for run in response.json()["data"]})

            await asyncio.gather(*(one(b) for b in range(BATCHES)))
        nats_pid = nats_child(first)
        os.kill(nats_pid, signal.SIGKILL)  # at once after the last 201: nothing gets a chance to flush
        first.kill9()
        await until(lambda: not pid_alive(nats_pid), timeout=5, what="SIGKILLed nats-server gone")
    finally:
        first.stop()
    assert len(acknowledged) == BATCHES * RUNS_PER_BATCH

    second = GyozaServer(data_dir, None, port=first.port).start()
    try:
        async with http(second) as client:
            for batch_id in batch_ids:
                view = (await client.get(f"/batches/{batch_id}")).json()
                assert (view["total"], view["counts"]["PENDING"]) == (RUNS_PER_BATCH, RUNS_PER_BATCH), view
            gate = asyncio.Semaphore(16)

            async def check(run_id: str) -> None:
                async with gate:
                    response = await client.get(f"/runs/{run_id}")
                assert response.status_code == 200, response.text
                assert summary(response.json()) == summary(acknowledged[run_id])
                assert response.json()["batch_id"] == acknowledged[run_id]["batch_id"]

            await asyncio.gather(*(check(run_id) for run_id in acknowledged))
    finally:
        assert second.stop() == 0
