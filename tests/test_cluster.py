"""Gyoza on a 3-node JetStream cluster (issue 15, issue 12 item 1): two servers with ``GYOZA_NATS_REPLICAS=3`` and two
simulated workers, under a steady submission load, while NATS nodes are killed with ``kill -9`` three times (the node a
server is connected to, the other server's node, the runs bucket's stream leader), each restarted to rejoin.

Clients post runs with idempotency keys and retry a 503 with the same key, as a careful client does. Both servers'
``/health`` is sampled for who acts as scheduler. At the end: no 500, every acknowledged run is in KV and completed,
no attempt was assigned twice, no key made two runs, never two schedulers in one sample, and every stream, bucket
and the scheduler's consumer really has three replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from gyoza.bus.topology import load_consumers, load_topology
from tests.cluster import GyozaCluster, NatsNode
from tests.processes import GyozaServer
from tests.simworker import SimWorker, unique_tag
from tests.waiting import until

# A killed stream leader is replaced after a raft election timeout (4-9 s in nats-server): the worker timeout stays
# at its default so workers are not evicted meanwhile; the lease TTL is short so fail-overs happen within the test.
SETTINGS = {"GYOZA_HEARTBEAT_INTERVAL": "0.5", "GYOZA_WORKER_TIMEOUT": "10", "GYOZA_LEASE_TTL": "3"}
CLIENTS = 4
PACE_S = 0.1  # between one client's submissions: a steady load, not a benchmark
DOWN_S = 3.0  # how long a killed node stays down
SETTLE_S = 2.0  # load after a node has rejoined, before the next kill


@dataclass
class Load:
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    acknowledged: dict[str, str] = field(default_factory=dict)  # idempotency key -> run id
    slowest_s: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


@dataclass
class Leaders:
    samples: int = 0
    max_at_once: int = 0
    seen: set[int] = field(default_factory=set)  # which servers (by index) were ever seen leading


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GyozaCluster]:
    started = GyozaCluster(tmp_path_factory.mktemp("cluster"), servers=2, **SETTINGS).start()
    yield started
    started.stop()


async def submit(n: int, cluster: GyozaCluster, tag: str, load: Load, stop: asyncio.Event) -> None:
    """Submit runs until ``stop``; each one under its own idempotency key, retried on 503 or a broken connection,
    alternating between the servers, until a 2xx acknowledges it."""
    clients = [GyozaCluster.client(server, timeout=20) for server in cluster.servers]
    try:
        count = 0
        while not stop.is_set():
            key = f"client{n}-{count}"
            body = {"image": "sim/op:1", "tags": [tag], "constraints": {"cpu": 0.5, "ram_mb": 64}}
            attempt = 0
            while not stop.is_set():
                http = clients[(count + attempt) % len(clients)]
                attempt += 1
                started = time.monotonic()
                try:
                    response = await http.post("/runs", json=body, headers={"Idempotency-Key": key})
                except httpx.HTTPError:
                    load.transport_errors += 1
                    await asyncio.sleep(0.2)
                    continue
                load.slowest_s = max(load.slowest_s, time.monotonic() - started)
                load.statuses[response.status_code] += 1
                if response.is_success:
                    load.acknowledged[key] = response.json()["id"]
                    break
                if response.status_code != 503:
                    break  # counted; the test fails on it
                await asyncio.sleep(0.2)
            count += 1
            await asyncio.sleep(PACE_S)
    finally:
        for http in clients:
            await http.aclose()


async def sample_leaders(servers: list[GyozaServer], leaders: Leaders, stop: asyncio.Event) -> None:
    """Ask both servers at the same moment who acts as scheduler, every 100 ms."""
    clients = [httpx.AsyncClient(base_url=server.url, timeout=2) for server in servers]

    async def scheduler(http: httpx.AsyncClient) -> str | None:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            value: str = (await http.get("/health")).json()["scheduler"]
            return value
        return None

    try:
        while not stop.is_set():
            answers = await asyncio.gather(*(scheduler(http) for http in clients))
            leading = {n for n, answer in enumerate(answers) if answer == "leader"}
            leaders.samples += 1
            leaders.max_at_once = max(leaders.max_at_once, len(leading))
            leaders.seen |= leading
            await asyncio.sleep(0.1)
    finally:
        for http in clients:
            await http.aclose()


async def work(worker: SimWorker, started: dict[tuple[str, int], set[str]], stop: asyncio.Event) -> None:
    """Claim and complete whatever is assigned, riding out 503s while a node is down; note which worker the server
    let start which attempt."""
    while not stop.is_set():
        try:
            response = await worker.http.post(f"/workers/{worker.worker_id}/claim", params={"wait": 1})
            if response.status_code != 200:
                await asyncio.sleep(0.2)
                continue
            for item in response.json()["data"]:
                run_id, attempt = item["run_id"], item["attempt"]
                if await report(worker, run_id, attempt, "STARTED") == 200:
                    started.setdefault((run_id, attempt), set()).add(worker.worker_id)
                    await report(worker, run_id, attempt, "COMPLETED", payload={"outputs": {}})
        except httpx.HTTPError:
            await asyncio.sleep(0.2)


async def report(worker: SimWorker, run_id: str, attempt: int, type: str, **kwargs: Any) -> int:
    """Report an event until the server takes or refuses it (a 503 is retried, as a real worker does)."""
    deadline = time.monotonic() + 30
    while (status := (await worker.report(run_id, attempt, type, **kwargs)).status_code) == 503:
        assert time.monotonic() < deadline, f"{type} of {run_id} refused with 503 for 30 s"
        await asyncio.sleep(0.2)
    return status


async def stream_leader(nc: Client, stream: str) -> str | None:
    info = await nc.jetstream().stream_info(stream)
    return info.cluster.leader if info.cluster else None


async def every_stream_led(nc: Client) -> bool:
    """Whether every stream and bucket has a leader again: a node's /healthz can pass before an election ends."""
    try:
        return all([await stream_leader(nc, stream.config["name"]) for stream in load_topology()])
    except Exception:  # no answer yet
        return False


async def kill_and_restart(node: NatsNode, nc: Client, log: list[str], why: str) -> None:
    node.kill9()
    killed_at = time.monotonic()
    await asyncio.sleep(DOWN_S)  # the node stays down this long while the load goes on
    node.spawn()
    await asyncio.to_thread(node.wait_ready)  # /healthz 200: rejoined, and its replicas caught up
    await until(lambda: every_stream_led(nc), timeout=30, interval=0.2, what="every stream has a leader")
    log.append(f"killed {node.name} ({why}); rejoined, every stream led {time.monotonic() - killed_at:.1f} s later")
    await asyncio.sleep(SETTLE_S)


async def run_records(nc: Client) -> dict[str, dict[str, Any]]:
    """Every record of KV gyoza_runs (this cluster holds only this test's runs)."""
    kv = await nc.jetstream().key_value("gyoza_runs")
    records: dict[str, dict[str, Any]] = {}
    watcher = await kv.watchall()
    async for entry in watcher:
        if entry is None:
            break
        if entry.value:
            records[entry.key] = json.loads(entry.value)
    await watcher.stop()
    return records


def doubled_assignments(record: dict[str, Any]) -> int:
    """Attempts assigned again without being unassigned in between (a run on two workers at once)."""
    doubled = 0
    for attempt in {event["attempt"] for event in record["events"]}:
        held = False
        for event in (e for e in record["events"] if e["attempt"] == attempt):
            if event["type"] == "ASSIGNED":
                doubled += held
                held = True
            elif event["type"] == "UNASSIGNED":
                held = False
    return doubled


async def test_three_node_kills_under_load(cluster: GyozaCluster) -> None:
    tag = unique_tag()
    stop, done = asyncio.Event(), asyncio.Event()
    load, leaders, kills = Load(), Leaders(), []
    started_by: dict[tuple[str, int], set[str]] = {}
    workers = [
        await SimWorker(server.url, f"cl{n}-{tag}", cpu=4, ram_mb=4096, tags=[tag], interval=0.5).start()
        for n, server in enumerate(cluster.servers)
    ]
    background = [asyncio.create_task(work(w, started_by, done)) for w in workers]
    background.append(asyncio.create_task(sample_leaders(cluster.servers, leaders, done)))
    submitters = [asyncio.create_task(submit(n, cluster, tag, load, stop)) for n in range(CLIENTS)]
    nc = await cluster.nats.connect()
    started = time.monotonic()
    try:
        await asyncio.sleep(SETTLE_S)  # the load is under way
        for n, server in enumerate(cluster.servers):
            node = await until(lambda s=server: asyncio.to_thread(cluster.node_of, s), what=f"server {n}'s node")
            await kill_and_restart(node, nc, kills, f"server {n} was connected to it")
        leader_name = await stream_leader(nc, "KV_gyoza_runs")
        node = next((n for n in cluster.nats.nodes if n.name == leader_name), cluster.nats.nodes[0])
        await kill_and_restart(node, nc, kills, "leader of KV_gyoza_runs")
        stop.set()
        await asyncio.gather(*submitters)
        acknowledged = set(load.acknowledged.values())

        async def all_completed() -> dict[str, dict[str, Any]] | None:
            try:
                records = await run_records(nc)
            except Exception:  # a NATS timeout is a TimeoutError too: it must not end the wait below
                return None
            finished = all(records.get(run_id, {}).get("attempts", [{}])[-1].get("state") == "COMPLETED"
                           for run_id in acknowledged)  # fmt: skip
            return records if finished else None

        try:
            records = await until(all_completed, timeout=30, interval=0.5, what="every acknowledged run completes")
        except TimeoutError:
            records = await run_records(nc)
        streams = {s.config["name"]: await nc.jetstream().stream_info(s.config["name"]) for s in load_topology()}
        consumers = [
            await nc.jetstream().consumer_info(c["stream_name"], c["config"]["durable_name"]) for c in load_consumers()
        ]
    finally:
        stop.set()
        done.set()
        await asyncio.gather(*submitters, *background, return_exceptions=True)
        for worker in workers:
            await worker.close()
        await nc.close()

    lost = [run_id for run_id in acknowledged if run_id not in records]
    by_key = Counter(record.get("idempotency_key") for record in records.values())
    doubled_keys = sum(count - 1 for key, count in by_key.items() if key and count > 1)
    doubled = sum(doubled_assignments(record) for record in records.values())
    doubled_runs = sum(1 for holders in started_by.values() if len(holders) > 1)
    unfinished = Counter(
        records[run_id]["attempts"][-1]["state"] for run_id in acknowledged if run_id in records
    )  # fmt: skip
    unfinished.pop("COMPLETED", None)
    landed_unacknowledged = sum(1 for record in records.values() if record["id"] not in acknowledged)
    print(
        f"\n{time.monotonic() - started:.0f} s, {len(kills)} node kills:\n  " + "\n  ".join(kills) + "\n"
        f"requests {load.requests}, 2xx {sum(c for s, c in load.statuses.items() if 200 <= s < 300)}, "
        f"503 {load.statuses[503]}, 500 {load.statuses[500]}, all {dict(load.statuses)} (a 200 would be a retry "
        f"finding its refused first try stored), "
        f"connection errors {load.transport_errors}, slowest answer {load.slowest_s:.2f} s\n"
        f"acknowledged runs {len(acknowledged)}, lost {len(lost)}, duplicate runs by key {doubled_keys}, "
        f"attempts assigned twice {doubled}, attempts started on two workers {doubled_runs}, "
        f"not completed {dict(unfinished)}, stored without a 2xx (cut off by the end) {landed_unacknowledged}\n"
        f"scheduler samples {leaders.samples}, max simultaneous leaders {leaders.max_at_once}, "
        f"servers seen leading {sorted(leaders.seen)}"
    )

    stuck = [records[r] for r in acknowledged if r in records and records[r]["attempts"][-1]["state"] != "COMPLETED"]
    problems: list[str] = []

    def check(ok: bool, problem: str) -> None:
        if not ok:
            problems.append(problem)

    check(set(load.statuses) <= {200, 201, 503}, f"answers other than 2xx/503: {dict(load.statuses)}")
    check(bool(acknowledged), "no run was acknowledged")
    check(not lost, f"acknowledged runs missing from KV: {lost[:5]}")
    check(not doubled_keys, f"{doubled_keys} idempotency keys made two runs")
    check(not (doubled or doubled_runs), f"{doubled} attempts assigned twice, {doubled_runs} started on two workers")
    check(leaders.max_at_once <= 1, f"{leaders.max_at_once} servers acted as scheduler at once")
    check(bool(leaders.seen), "no server ever acted as scheduler")
    examples = "; ".join(
        f"{r['id']} {r['attempts'][-1]['state_reason']} events {[(e['attempt'], e['type']) for e in r['events']]}"
        for r in stuck[:3]
    )
    check(not stuck, f"acknowledged runs that never completed: {dict(unfinished)}, e.g. {examples}")
    for name, info in streams.items():
        replicas = len(info.cluster.replicas or []) if info.cluster else 0
        leader = info.cluster.leader if info.cluster else None
        problem = f"{name}: num_replicas {info.config.num_replicas}, leader {leader}, {replicas} other replicas"
        check(info.config.num_replicas == 3 and replicas == 2 and bool(leader), problem)
    for consumer in consumers:
        replicas = len(consumer.cluster.replicas or []) if consumer.cluster else 0
        check(replicas == 2, f"consumer {consumer.name}: {replicas} replicas beside the leader")
    assert not problems, "\n".join(problems)


async def test_health_says_jetstream_is_down_when_the_cluster_loses_its_quorum(cluster: GyozaCluster) -> None:
    """Connected to a live node, yet nothing can be written: /health must not say ok (its cached JetStream check)."""
    server = cluster.servers[0]
    serving = await until(lambda: asyncio.to_thread(cluster.node_of, server), what="the node server 0 is on")
    others = [node for node in cluster.nats.nodes if node is not serving]
    async with GyozaCluster.client(server, timeout=5) as http:

        async def health_is(status: int) -> dict[str, Any] | None:
            with contextlib.suppress(httpx.HTTPError):
                response = await http.get("/health")
                if response.status_code == status:
                    body: dict[str, Any] = response.json()
                    return body
            return None

        for node in others:
            node.kill9()
        killed_at = time.monotonic()
        try:
            down = await until(lambda: health_is(503), timeout=30, interval=0.2, what="/health says unavailable")
            noticed_s = time.monotonic() - killed_at
        finally:
            for node in others:
                node.spawn()
            for node in others:
                await asyncio.to_thread(node.wait_ready)
        await until(lambda: health_is(200), timeout=30, interval=0.2, what="/health ok once the quorum is back")
    print(f"\n/health reported the lost quorum {noticed_s:.1f} s after two of three nodes died")
    assert down["status"] == "unavailable"
    assert down["nats"]["connected"] is True and down["nats"]["jetstream"] is False
