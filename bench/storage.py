"""The storage benchmark (issue 6): a server's memory, start-up replay and GET /runs latency with 100k stored runs.

Seeding, on a bare nats-server with no Gyoza server running: ``pending`` runs through ``RunService.create_adhoc``
(records plus run requests, as the API makes them) and the rest as finished runs: one ad hoc run is taken through the
real state machine (created, assigned, STARTED, COMPLETED with outputs), and each seeded run is a copy of that
record under its own id and creation time (half of them carrying a definition name), stored with ``kv.create``.

Then a fresh ``gyoza server start`` on that NATS: the time until it answers (it serves only after replaying every run
into its index and scheduler), its RSS then and after the queries, and GET /runs latency for a few query shapes. Then
the same server once more: a restart with the query index it kept (issue 12: ready in <= 3 s with 100k runs).

Ceilings, in the same run: the same server's RSS and start time on an empty NATS, and a raw KV watch of the 100k
records from this process (how fast NATS alone delivers them, without parsing).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from nats.js.kv import KeyValue

from bench.common import (
    API_KEY,
    GyozaServer,
    Outcome,
    bare_nats,
    bounded_gather,
    latency_summary,
    service_bus,
    start_server,
)
from gyoza.bus import names
from gyoza.bus.port import INITIAL_VALUES_DONE, Bucket
from gyoza.core import statemachine as sm
from gyoza.schema import AdHocRunIn, RunRecord, WorkerEventIn
from gyoza.services.clock import utcnow

GOALS = {"rss_mb": 300.0, "restart_s": 3.0}
RUN_BODY = {
    "image": "bench/op:1", "command": ["run", "--fast"], "inputs": {"text": "a" * 200, "count": 3},
    "constraints": {"cpu": 1, "ram_mb": 256}, "tags": ["bench"],
}  # fmt: skip


@dataclass
class Config:
    runs: int = 100_000
    pending: int = 10_000
    queries_per_shape: int = 200
    create_concurrency: int = 256

    @classmethod
    def quick(cls) -> Config:
        return cls(runs=20_000, pending=2_000, queries_per_shape=100)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


async def finished_template(runs: Any) -> RunRecord:
    """A real finished run: created by the service, then assigned, started and completed by the state machine."""
    record, _ = await runs.create_adhoc(AdHocRunIn.model_validate(RUN_BODY), None)
    now = utcnow()
    record = sm.assign(record, 1, "bench-worker-00001", [], now)
    for type_, payload in (("STARTED", {}), ("COMPLETED", {"exit_code": 0, "outputs": {"result": "b" * 200}})):
        event = WorkerEventIn(attempt=1, worker_id="bench-worker-00001", type=type_, payload=payload)  # type: ignore[arg-type]
        changed = sm.apply_worker_event(record, event, now)
        assert changed is not None
        record = changed
    await runs.store.delete(record.id)
    return record


async def seed(kv: KeyValue, runs: Any, cfg: Config) -> dict[str, Any]:
    started = time.perf_counter()
    template = await finished_template(runs)
    base = utcnow() - timedelta(days=1)
    finished = cfg.runs - cfg.pending

    async def put_finished(i: int) -> None:
        created = base + timedelta(milliseconds=i)
        copy = template.model_copy(update={
            "id": str(uuid.uuid4()), "created_at": created, "updated_at": created,
            "op_definition": "bench-op" if i % 2 else None, "definition_version": "1" if i % 2 else None,
        })  # fmt: skip
        await kv.create(copy.id, copy.model_dump_json().encode())

    await bounded_gather(finished, cfg.create_concurrency, put_finished)
    finished_s = time.perf_counter() - started
    body = AdHocRunIn.model_validate(RUN_BODY)
    await bounded_gather(cfg.pending, cfg.create_concurrency, lambda _: runs.create_adhoc(body, None))
    return {
        "finished": finished,
        "pending": cfg.pending,
        "record_bytes_finished": len(template.model_dump_json()),
        "seed_s": round(time.perf_counter() - started, 1),
        "finished_per_s": round(finished / finished_s),
    }


async def raw_replay_s(bucket: Bucket) -> tuple[float, int]:
    """A KV watch of every key, values untouched: NATS delivery alone."""
    started = time.perf_counter()
    count = 0
    async for change in bucket.watch():
        if change is INITIAL_VALUES_DONE:
            break
        count += 1
    return time.perf_counter() - started, count


async def timed_start(nats_url: str, work_dir: Path) -> tuple[GyozaServer, float]:
    started = time.perf_counter()
    server = await start_server(work_dir, nats_url)
    return server, time.perf_counter() - started


async def query_latencies(url: str, cfg: Config, sample_ids: list[str]) -> dict[str, Any]:
    shapes: dict[str, list[dict[str, Any]]] = {
        "newest 10 (no filter)": [{}],
        "newest 100": [{"limit": 100}],
        "state=PENDING": [{"state": "PENDING"}],
        "state=COMPLETED,FAILED limit 50": [{"state": "COMPLETED,FAILED", "limit": 50}],
        "op_definition=bench-op": [{"op_definition": "bench-op"}],
        "cursor page (starting_after a random run)": [{"starting_after": rid} for rid in sample_ids],
        "cursor page backwards (ending_before)": [{"ending_before": rid} for rid in sample_ids],
    }
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": API_KEY}, timeout=30) as http:
        for _ in range(20):  # warm-up: connection, caches
            (await http.get("/runs")).raise_for_status()
        for name, variants in shapes.items():
            samples = []
            for i in range(cfg.queries_per_shape):
                params = variants[i % len(variants)]
                started = time.perf_counter()
                response = await http.get("/runs", params=params)
                samples.append(time.perf_counter() - started)
                response.raise_for_status()
            results[name] = latency_summary(samples)
        listed = (await http.get("/runs", params={"limit": 1, "state": "PENDING"})).json()["data"]
        results["_pending_visible"] = bool(listed)
    return results


async def run(quick: bool = False, profile: bool = False, results_dir: Path = Path("bench/results")) -> Outcome:
    cfg = Config.quick() if quick else Config()
    out = Outcome("storage", asdict(cfg))
    async with bare_nats() as (url, work_dir, _, js):
        # Ceiling: the same server on an empty NATS.
        empty_server, empty_start_s = await timed_start(url, work_dir / "empty")
        empty_rss = rss_mb(empty_server.pid)
        empty_server.stop()

        kv = await js.key_value(names.RUNS_BUCKET)
        async with service_bus(url, work_dir) as (bus, runs):
            seeded = await seed(kv, runs, cfg)
            raw_s, raw_count = await raw_replay_s(bus.runs)
            ids = [k for k in await kv.keys()]
        stored = (await js.stream_info(f"KV_{names.RUNS_BUCKET}")).state.messages

        load = round(os.getloadavg()[0], 2)
        data_dir = Path(tempfile.mkdtemp(prefix="gyoza-bench-storage-", dir=work_dir))
        server, start_s = await timed_start(url, data_dir)
        try:
            rss_ready = rss_mb(server.pid)
            queries = await query_latencies(server.url, cfg, random.Random(7).sample(ids, 50))
            rss_after = rss_mb(server.pid)
        finally:
            server.stop()
        # The same server again: it keeps its query index, so it replays only what changed since it stopped.
        restarted, restart_s = await timed_start(url, data_dir)
        restarted.stop()
    out.results = {
        "seed": seeded, "stored_records": stored, "raw_watch_s": round(raw_s, 2), "raw_watch_count": raw_count,
        "empty_server": {"start_s": round(empty_start_s, 2), "rss_mb": empty_rss},
        "server": {"start_s": round(start_s, 2), "rss_mb_ready": rss_ready, "rss_mb_after_queries": rss_after},
        "restart_s": round(restart_s, 2),
        "queries": queries, "loadavg_1m_before": load,
    }  # fmt: skip
    out.row("ceiling: empty server", f"ready in {empty_start_s:.2f} s, RSS {empty_rss} MB")
    out.row(f"ceiling: raw KV watch of {raw_count:,} records (no parsing)", f"{raw_s:.2f} s")
    out.row("seeding", f"{stored:,} records ({cfg.pending:,} pending) in {seeded['seed_s']} s")
    out.row(f"server start with {stored:,} runs (replay into index + scheduler)", f"ready in {start_s:.2f} s; "
            f"load {load}")  # fmt: skip
    verdict = out.goal(f"restart with {stored:,} runs", restart_s, GOALS["restart_s"], False)
    out.row(f"server restart with {stored:,} runs (kept index: seeds {cfg.pending:,} pending, replays the rest)",
            f"ready in {restart_s:.2f} s", f"<= {GOALS['restart_s']:g} s", verdict)  # fmt: skip
    peak = max(rss_ready, rss_after)
    verdict = out.goal(f"RSS with {stored:,} runs", peak, GOALS["rss_mb"], False)
    out.row(f"server RSS with {stored:,} runs", f"{rss_ready} MB after replay, {rss_after} MB after the queries",
            f"<= {GOALS['rss_mb']:g} MB", verdict)  # fmt: skip
    for name, summary in queries.items():
        if name.startswith("_"):
            continue
        out.row(f"GET /runs {name}", f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms (n={summary['count']})")
    return out
