"""``gyoza run NAME --inputs-file runs.jsonl [--wait]`` and ``gyoza batches get``: a run per line, a bad line named
by its number and nothing created, one progress bar for the whole batch, each run's outcome as a JSON line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tests.cliproc import failed, gyoza_cli, ok, spawn
from tests.processes import GyozaServer
from tests.scheduling import assign_run
from tests.test_api_definitions import definition, deploy
from tests.waiting import until


async def listed(client: httpx.AsyncClient, name: str) -> list[str]:
    return [r["id"] for r in (await client.get("/runs", params={"op_definition": name, "limit": 100})).json()["data"]]


async def test_inputs_file_creates_a_run_per_line_in_order(
    server: GyozaServer, client: httpx.AsyncClient, unique_name: str, tmp_path: Path
) -> None:
    await deploy(client, definition(unique_name))
    lines = tmp_path / "runs.jsonl"
    lines.write_text("".join(json.dumps({"text": f"t{i}", "top_k": 1 + i % 5}) + "\n" for i in range(12)) + "\n")
    result = await asyncio.to_thread(gyoza_cli, server, tmp_path, "run", unique_name, "--inputs-file", str(lines))
    ids = ok(result).split()
    assert len(ids) == 12 and "12 runs of" in result.stderr
    runs = [(await client.get(f"/runs/{run_id}")).json() for run_id in ids]
    assert [r["inputs"]["text"] for r in runs] == [f"t{i}" for i in range(12)]
    [batch_id] = {r["batch_id"] for r in runs}
    shown = await asyncio.to_thread(gyoza_cli, server, tmp_path, "batches", "get", batch_id)
    assert "12 runs, 0 finished" in ok(shown) and "12 pending" in shown.stdout
    await client.post("/runs/cancel", json={"batch_id": batch_id})


async def test_a_bad_line_is_named_and_nothing_is_created(
    server: GyozaServer, client: httpx.AsyncClient, unique_name: str, tmp_path: Path
) -> None:
    await deploy(client, definition(unique_name))
    lines = tmp_path / "runs.jsonl"
    lines.write_text('{"text": "ok"}\n{"text": "x", "top_k": "many"}\n\n[1, 2]\n{"text": \n')
    result = await asyncio.to_thread(gyoza_cli, server, tmp_path, "run", unique_name, "--inputs-file", str(lines))
    failed(result, 2, "line 2: inputs.top_k", "line 4: expected a JSON object", "line 5: not JSON")
    assert await listed(client, unique_name) == []


async def test_wait_follows_the_whole_batch_and_prints_each_outcome(
    server: GyozaServer, client: httpx.AsyncClient, nats_url: str, unique_name: str, tmp_path: Path
) -> None:
    await deploy(client, definition(unique_name))
    lines = tmp_path / "runs.jsonl"
    lines.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(3)))
    process = spawn(server, tmp_path, "run", unique_name, "--inputs-file", str(lines), "--wait")
    try:

        async def three() -> list[str] | None:
            found = await listed(client, unique_name)
            return found if len(found) == 3 else None

        ids = sorted(await until(three, 20, what="the batch's runs"))
        for run_id in ids[:2]:
            await assign_run(nats_url, run_id, "cli-w1")
            for event in ({"type": "STARTED"}, {"type": "COMPLETED", "payload": {"outputs": {"label": "ok"}}}):
                posted = await client.post(
                    f"/runs/{run_id}/events", json={"attempt": 1, "worker_id": "cli-w1", **event}
                )
                assert posted.status_code == 200, posted.text
        await client.post(f"/runs/{ids[2]}/cancel")
        stdout, stderr = await asyncio.to_thread(process.communicate, timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, stderr
    assert "1 of 3 runs did not complete" in stderr
    outcomes = [json.loads(line) for line in stdout.splitlines()]
    assert sorted(o["id"] for o in outcomes) == ids
    assert sorted(o["state"] for o in outcomes) == ["CANCELLED", "COMPLETED", "COMPLETED"]
    assert all(o["outputs"] == {"label": "ok"} for o in outcomes if o["state"] == "COMPLETED")
