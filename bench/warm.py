"""The warm instances benchmark (issue 13.4): an op whose ``setup()`` sleeps 2 s (a model load), through a real
``gyoza worker start`` (Docker runtime, network none, 2 CPUs) on a fresh stack, in each worker mode.

- **Cold ceiling**, in the same run: the same op without ``keep_warm_seconds``, sequential runs: every run starts a
  container and pays the setup. Submit -> STARTED (``created_at`` -> the STARTED event, server clock).
- **Warm hits**: the definition keeps instances warm; after a first run (which starts the instance), sequential runs
  each find it idle. Submit -> STARTED and submit -> COMPLETED per run.
- **1,000 runs** of a second warm definition submitted as batches of 500, 1 CPU each on the 2-CPU worker: how many
  ``setup()`` calls there were (the op notes each in the definition's cache) against how many instance containers
  the engine started (its event log), and the runs/s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import Outcome, latency_summary, stack, until
from bench.worker_overhead import IMAGE, WORKER, docker_ready, worker_process
from gyoza.worker.runtimes.docker import LABEL_INSTANCE

GOALS = {"warm_hit_started_p50_ms": 20.0}
SETUP_S = 2.0
BATCH = 500


@dataclass
class Config:
    runs: int = 50  # sequential warm hits per mode
    cold_runs: int = 5
    many: int = 1000
    modes: tuple[str, ...] = ("rest", "nats")

    @classmethod
    def quick(cls) -> Config:
        return cls(runs=20, cold_runs=3, many=1000)


def _t(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def definition(name: str, warm: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name, "version": "1.0.0", "image": IMAGE, "command": ["ops:warm"],
        "env": {"SETUP_SECONDS": str(SETUP_S)}, "constraints": {"cpu": 1, "ram_mb": 256},
        "input_specs": {"note": {"type": "string", "required": False}},
    }  # fmt: skip
    if warm:
        body["keep_warm_seconds"] = 600
    return body


async def sequential(http: httpx.AsyncClient, name: str, count: int) -> dict[str, list[float]]:
    """``count`` runs one after another (``?wait=``): submit -> STARTED and submit -> COMPLETED of each (s)."""
    started: list[float] = []
    completed: list[float] = []
    for n in range(count):
        response = await http.post(f"/definitions/{name}/runs", params={"wait": 60}, timeout=70,
                                   json={"inputs": {"note": f"run {n}"}})  # fmt: skip
        response.raise_for_status()
        run = response.json()
        if run["state"] != "COMPLETED":
            raise RuntimeError(f"run {run['id']} ended {run['state']}: {run['state_reason']}")
        events = (await http.get(f"/runs/{run['id']}/events")).json()["data"]
        at = {e["type"]: _t(e["t"]) for e in events}
        created = _t(run["created_at"])
        started.append(at["STARTED"] - created)
        completed.append(at["COMPLETED"] - created)
    return {"started": started, "completed": completed}


def instances_started(since: float) -> int:
    """Instance containers the engine started since ``since`` (its own event log, not the worker's word)."""
    import docker

    client = docker.from_env()
    events = client.events(since=int(since), until=int(time.time()) + 1, decode=True,
                           filters={"type": "container", "event": "start", "label": LABEL_INSTANCE})  # fmt: skip
    return sum(1 for _ in events)


async def many_runs(http: httpx.AsyncClient, name: str, count: int, cache: Path) -> dict[str, Any]:
    since = time.time() - 1
    begun = time.perf_counter()
    batch_ids: list[str] = []
    for offset in range(0, count, BATCH):
        items = [{"inputs": {"note": str(n)}} for n in range(offset, min(offset + BATCH, count))]
        response = await http.post(f"/definitions/{name}/runs/batch", json={"runs": items}, timeout=60)
        response.raise_for_status()
        batch_ids.append(response.json()["data"][0]["batch_id"])
    for batch_id in batch_ids:

        async def finished(batch_id: str = batch_id) -> bool:
            view = (await http.get(f"/batches/{batch_id}")).json()
            return bool(view["finished"] == view["total"])

        if not await until(finished, 900, every=0.2):
            raise TimeoutError(f"batch {batch_id} did not finish")
    elapsed = time.perf_counter() - begun
    completed = sum([(await http.get(f"/batches/{b}")).json()["counts"]["COMPLETED"] for b in batch_ids])
    if completed != count:
        raise RuntimeError(f"{count - completed} of {count} runs did not complete")
    setups_log = cache / name / "setups.log"
    setups = len(setups_log.read_text().splitlines()) if setups_log.exists() else 0
    started = await asyncio.to_thread(instances_started, since)
    return {"runs": count, "seconds": round(elapsed, 2), "runs_per_s": round(count / elapsed, 1),
            "setup_calls": setups, "instances_started": started}  # fmt: skip


async def mode_results(cfg: Config, mode: str) -> dict[str, Any]:
    async with stack() as s:
        with worker_process(s.server.url, s.work_dir, mode, s.nats_url) as (process, log_path):

            async def online() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"worker exited: {log_path.read_text()[-2000:]}")
                response = await s.http.get(f"/workers/{WORKER}")
                return response.status_code == 200 and response.json()["status"] == "ONLINE"

            if not await until(online, 30):
                raise TimeoutError("the worker did not come online")
            suffix = uuid.uuid4().hex[:6]
            cold, warm, bulk = f"cold-{suffix}", f"warm-{suffix}", f"bulk-{suffix}"
            for name, keep in ((cold, False), (warm, True), (bulk, True)):
                (await s.http.post("/definitions", json=definition(name, keep))).raise_for_status()
            cold_times = await sequential(s.http, cold, cfg.cold_runs)
            first = await sequential(s.http, warm, 1)  # starts the instance: setup and all
            hits = await sequential(s.http, warm, cfg.runs)
            bulk_results = await many_runs(s.http, bulk, cfg.many, s.work_dir / "cache")
    return {
        "cold": {k: latency_summary(v) for k, v in cold_times.items()},
        "first_warm": {k: latency_summary(v) for k, v in first.items()},
        "warm_hits": {k: latency_summary(v) for k, v in hits.items()},
        "many": bulk_results,
    }


async def run(quick: bool = False, profile: bool = False, results_dir: Path = Path("bench/results")) -> Outcome:
    cfg = Config.quick() if quick else Config()
    out = Outcome("warm", asdict(cfg))
    skipped = await asyncio.to_thread(docker_ready)
    if skipped is not None:
        out.results["skipped"] = skipped
        out.row("skipped", skipped)
        return out
    for mode in cfg.modes:
        result = out.results[mode] = await mode_results(cfg, mode)
        cold, hits, many = result["cold"], result["warm_hits"], result["many"]
        out.row(
            f"ceiling: cold runs, {mode} worker: submit -> STARTED / COMPLETED p50 (setup {SETUP_S:g} s each)",
            f"{cold['started']['p50_ms']} / {cold['completed']['p50_ms']} ms (n={cold['started']['count']})",
        )
        out.row(f"first run of a warm definition, {mode}: submit -> COMPLETED",
                f"{result['first_warm']['completed']['p50_ms']} ms (starts the instance)")  # fmt: skip
        p50 = hits["started"]["p50_ms"]
        verdict = out.goal(f"warm hit submit -> STARTED p50 ({mode})", p50, GOALS["warm_hit_started_p50_ms"], False)
        out.row(f"warm hits, {mode} worker: submit -> STARTED p50 / p99",
                f"{p50} / {hits['started']['p99_ms']} ms (n={hits['started']['count']})",
                f"<= {GOALS['warm_hit_started_p50_ms']:g} ms", verdict)  # fmt: skip
        out.row(f"warm hits, {mode} worker: submit -> COMPLETED p50", f"{hits['completed']['p50_ms']} ms")
        same = many["setup_calls"] == many["instances_started"]
        out.goals.append({"metric": f"setup() calls = instances started ({mode})", "measured": many["setup_calls"],
                          "target": many["instances_started"], "met": same})  # fmt: skip
        out.row(f"{many['runs']} runs in batches of {BATCH}, {mode}: setup() calls / instances started",
                f"{many['setup_calls']} / {many['instances_started']}; {many['runs_per_s']} runs/s",
                "equal", "met" if same else "MISSED")  # fmt: skip
    return out
