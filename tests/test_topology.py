"""The operator's interface: broker/ files, the names in gyoza/bus/names.py, what the server applied, what the wheel
ships, and the docker-compose cluster (whose NATS command lines are run here for real, on loopback)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import yaml
from nats.js import JetStreamContext

from gyoza.bus import names
from gyoza.bus.embedded import nats_server_binary
from gyoza.services import webhooks
from tests.processes import API_KEY, GyozaServer, free_port
from tests.waiting import until

ROOT = Path(__file__).resolve().parent.parent
BROKER = ROOT / "broker"
KV_BUCKETS = [
    names.DEFINITIONS_BUCKET,
    names.RUNS_BUCKET,
    names.WORKERS_BUCKET,
    names.LEASES_BUCKET,
    names.IDEMPOTENCY_BUCKET,
    names.KEYS_BUCKET,
    names.SECRETS_BUCKET,
]


def broker_files() -> dict[Path, dict[str, Any]]:
    """Every stream configuration (KV buckets and object stores are streams too)."""
    paths = [p for section in ("kv", "objects", "streams") for p in sorted((BROKER / section).glob("*.json"))]
    return {path: json.loads(path.read_text()) for path in paths}


def consumer_files() -> dict[Path, dict[str, Any]]:
    return {path: json.loads(path.read_text()) for path in sorted((BROKER / "consumers").glob("*.json"))}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_broker_files_declare_exactly_the_names_of_names_py() -> None:
    declared = {config["name"]: path.relative_to(BROKER).as_posix() for path, config in broker_files().items()}
    expected = {f"KV_{bucket}": f"kv/{bucket}.json" for bucket in KV_BUCKETS}
    expected[f"OBJ_{names.LOGS_BUCKET}"] = f"objects/{names.LOGS_BUCKET}.json"
    expected[names.RUN_REQUESTS_STREAM] = f"streams/{names.RUN_REQUESTS_STREAM}.json"
    expected[names.TOPICS_STREAM] = f"streams/{names.TOPICS_STREAM}.json"
    expected[names.LOGS_STREAM] = f"streams/{names.LOGS_STREAM}.json"
    for stream in (webhooks.QUEUE_STREAM, webhooks.LOG_STREAM):  # named beside their one user, for now
        expected[stream] = f"streams/{stream}.json"
    assert declared == expected


def test_kv_and_object_files_have_the_shape_the_nats_client_expects() -> None:
    # nats-py (and the NATS CLI) only treat a stream as a bucket when it looks exactly like one they would create.
    for bucket in KV_BUCKETS:
        config = json.loads((BROKER / "kv" / f"{bucket}.json").read_text())
        assert config["subjects"] == [f"$KV.{bucket}.>"], bucket
        assert config["allow_rollup_hdrs"] is True, bucket
        assert config["deny_delete"] is True, bucket
        assert config["discard"] == "new", bucket
    logs = json.loads((BROKER / "objects" / f"{names.LOGS_BUCKET}.json").read_text())
    assert logs["subjects"] == [f"$O.{names.LOGS_BUCKET}.C.>", f"$O.{names.LOGS_BUCKET}.M.>"]
    assert logs["allow_rollup_hdrs"] is True


def test_streams_carry_the_documented_subjects() -> None:
    requests = json.loads((BROKER / "streams" / f"{names.RUN_REQUESTS_STREAM}.json").read_text())
    topics = json.loads((BROKER / "streams" / f"{names.TOPICS_STREAM}.json").read_text())
    assert requests["subjects"] == [names.RUN_REQUESTED_SUBJECT]
    assert requests["retention"] == "workqueue"
    assert topics["subjects"] == [names.topic_subject(">")]
    queue = json.loads((BROKER / "streams" / f"{webhooks.QUEUE_STREAM}.json").read_text())
    log = json.loads((BROKER / "streams" / f"{webhooks.LOG_STREAM}.json").read_text())
    assert (queue["subjects"], queue["retention"]) == ([webhooks.QUEUE_SUBJECT], "workqueue")
    assert log["subjects"] == [webhooks.log_subject("*")]


async def test_the_server_applied_every_file_as_written(server: GyozaServer, js: JetStreamContext) -> None:
    for path, config in broker_files().items():
        applied = (await js.stream_info(config["name"])).config.as_dict()
        differing = {key: (value, applied.get(key)) for key, value in config.items() if applied.get(key) != value}
        assert differing == {}, f"{path.name}: (file, server) = {differing}"


def test_consumers_read_declared_streams() -> None:
    streams = {config["name"]: config["subjects"] for config in broker_files().values()}
    for path, consumer in consumer_files().items():
        assert path.name == f"{consumer['stream_name']}.{consumer['config']['durable_name']}.json"
        assert consumer["config"].get("filter_subject", ">") in [*streams[consumer["stream_name"]], ">"], path.name


async def test_the_server_applied_every_consumer(server: GyozaServer, js: JetStreamContext) -> None:
    for consumer in consumer_files().values():
        info = await js.consumer_info(consumer["stream_name"], consumer["config"]["durable_name"])
        assert info.config.filter_subject == consumer["config"].get("filter_subject")


def test_the_wheel_ships_the_topology_and_nats_conf(wheel: zipfile.ZipFile) -> None:
    shipped = set(wheel.namelist())
    assert "gyoza/_broker/kv/gyoza_runs.json" in shipped
    assert wheel.read("gyoza/_broker/nats.conf") == (ROOT / "nats.conf").read_bytes()
    topology = [*broker_files(), *consumer_files()]
    expected = {f"gyoza/_broker/{p.relative_to(BROKER).as_posix()}" for p in topology}
    assert expected <= shipped


def compose_command() -> list[str] | None:
    """Docker Compose v2 (the ``docker compose`` plugin) when present, else v1's ``docker-compose`` (Debian 12 ships
    only v1), else None."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_validates_with_docker_compose() -> None:
    """``docker compose config`` parses the file as Compose itself does (schema, interpolation, references)."""
    command = compose_command()
    if command is None:
        if os.environ.get("GYOZA_REQUIRE_DOCKER") == "1":
            pytest.fail("neither `docker compose` nor `docker-compose` is installed", pytrace=False)
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    # The file refuses to interpolate without a key (`${GYOZA_API_KEY:?...}`): an operator must set one.
    env = {k: v for k, v in os.environ.items() if k != "GYOZA_API_KEY"}
    refused = subprocess.run(
        [*command, "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "GYOZA_API_KEY" in refused.stderr + refused.stdout
    checked = subprocess.run(
        [*command, "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT,
        env={**env, "GYOZA_API_KEY": "compose-check"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr


def test_compose_has_three_nats_nodes_two_servers_and_a_worker() -> None:
    services: dict[str, dict[str, Any]] = compose()["services"]
    nats_nodes = {name for name, svc in services.items() if str(svc.get("image", "")).startswith("nats:")}
    servers = {name for name, svc in services.items() if svc.get("command") == ["gyoza", "server", "start"]}
    workers = {name for name, svc in services.items() if svc.get("command", [])[:3] == ["gyoza", "worker", "start"]}
    assert len(nats_nodes) == 3
    assert len(servers) == 2
    assert len(workers) == 1
    assert (ROOT / "Dockerfile").is_file()
    routes = ",".join(f"nats://{node}:6222" for node in sorted(nats_nodes))
    for node in nats_nodes:
        command = services[node]["command"]
        assert command[command.index("-n") + 1] == node
        assert command[command.index("--routes") + 1] == routes
        assert "./nats.conf:/etc/nats/gyoza.conf:ro" in services[node]["volumes"]
    for name in servers | workers:
        env = services[name]["environment"]
        assert set(env["GYOZA_NATS_URL"].split(",")) == {f"nats://{node}:4222" for node in nats_nodes}
        assert env["GYOZA_NATS_REPLICAS"] == "3"
        assert env["GYOZA_API_KEY"].startswith("${GYOZA_API_KEY")
    for name in servers:
        assert services[name]["environment"]["GYOZA_HOST"] == "0.0.0.0"


@pytest.fixture
def compose_nats_cluster(tmp_path: Path) -> Iterator[str]:
    """The three NATS nodes of docker-compose.yml, run from their own command lines with hosts mapped to loopback
    ports. Yields the comma-separated client URL list, as GYOZA_NATS_URL gives it to the servers."""
    services = compose()["services"]
    nodes = sorted(name for name, svc in services.items() if str(svc.get("image", "")).startswith("nats:"))
    client_ports = {node: free_port() for node in nodes}
    route_ports = {node: free_port() for node in nodes}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for node in nodes:
            args = _loopback_args(services[node]["command"], node, tmp_path, client_ports, route_ports)
            with (tmp_path / f"{node}.log").open("wb") as log:
                processes.append(subprocess.Popen(args, stdout=log, stderr=log))
        yield ",".join(f"nats://127.0.0.1:{client_ports[node]}" for node in nodes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


def _loopback_args(
    command: list[str], node: str, tmp: Path, client_ports: dict[str, int], route_ports: dict[str, int]
) -> list[str]:
    args = [nats_server_binary(), *command, "-a", "127.0.0.1", "-p", str(client_ports[node])]
    replace = {
        "/etc/nats/gyoza.conf": str(ROOT / "nats.conf"),
        "/data": str(tmp / node),
        "8222": str(free_port()),
        "nats://0.0.0.0:6222": f"nats://127.0.0.1:{route_ports[node]}",
    }
    args = [replace.get(arg, arg) for arg in args]
    routes = args.index("--routes") + 1
    for other, port in route_ports.items():
        args[routes] = args[routes].replace(f"nats://{other}:6222", f"nats://127.0.0.1:{port}")
    return args


async def test_servers_run_on_the_compose_cluster_with_3_replicas(compose_nats_cluster: str, data_dir: Path) -> None:
    first_url = compose_nats_cluster.split(",")[0]
    nc = await nats.connect(first_url)
    try:
        js = nc.jetstream(timeout=2)

        async def cluster_ready() -> bool:
            try:
                await js.account_info()
            except Exception:  # until the meta leader is elected, JetStream refuses every request
                return False
            return True

        await until(cluster_ready, timeout=30, what="JetStream cluster elected a meta leader")
        gyoza = GyozaServer(data_dir, compose_nats_cluster, GYOZA_NATS_REPLICAS="3").start()
        try:
            async with httpx.AsyncClient(base_url=gyoza.url, headers={"X-API-Key": API_KEY}) as http:
                created = await http.post("/runs", json={"image": "busybox", "inputs": {}})
                assert created.status_code == 201, created.text
                fetched = await http.get(f"/runs/{created.json()['id']}")
                assert fetched.json()["state"] == "PENDING"
        finally:
            gyoza.stop()
        info = await js.stream_info(f"KV_{names.RUNS_BUCKET}")
        assert info.config.num_replicas == 3
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == 2
    finally:
        await nc.close()
