"""Scoped API keys (issue 12.3, docs/keys.md): created, listed and revoked by admins, stored hashed, refused on every
replica once revoked, and each role allowed exactly what gyoza/core/roles.py says, on every route of the API."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from gyoza.client import GyozaClient
from gyoza.core.roles import ROUTES, Principal, WorkerIdAt, refusal, worker_refusal
from gyoza.errors import InvalidRequest
from gyoza.schema import KeyScope, Quota, Role
from tests.api_checks import NoTrace, error_of, fields
from tests.cliproc import failed, gyoza_cli
from tests.processes import API_KEY, GyozaServer
from tests.simworker import Cluster, wait_run
from tests.test_api_definitions import definition, deploy
from tests.test_api_path_params import HEARTBEAT, real_ids, request_for
from tests.waiting import until
from tests.workerproc import WorkerProcess, unique_worker_name

__all__ = ["real_ids"]  # a fixture, used by the route walk

REPO = Path(__file__).resolve().parent.parent
TOKEN = re.compile(r"gyz_([0-9a-f]{16})_[A-Za-z0-9_-]{43}")
NO_RUN = "00000000-0000-4000-8000-000000000000"


async def new_key(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/keys", json={"name": "test-" + uuid.uuid4().hex[:6], **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.fixture
async def as_key(server: GyozaServer) -> AsyncIterator[Any]:
    """``as_key(token)``: a client sending that token as its X-API-Key (closed after the test)."""
    opened: list[httpx.AsyncClient] = []

    def open_client(token: str | None, url: str = server.url) -> httpx.AsyncClient:
        headers = {} if token is None else {"X-API-Key": token}
        http = httpx.AsyncClient(base_url=url, headers=headers, timeout=30)
        opened.append(http)
        return http

    yield open_client
    for http in opened:
        await http.aclose()


async def test_create_list_get_revoke_and_the_token_is_shown_once(client: httpx.AsyncClient, as_key: Any) -> None:
    created = await new_key(client, role="read")
    token = created["token"]
    assert TOKEN.fullmatch(token) and TOKEN.fullmatch(token).group(1) == created["id"]  # type: ignore[union-attr]
    assert (created["role"], created["revoked_at"]) == ("read", None)
    reader = as_key(token)
    assert (await reader.get("/runs")).status_code == 200

    listed = await client.get("/keys")
    one = await client.get(f"/keys/{created['id']}")
    for answer in (listed, one):
        assert answer.status_code == 200
        assert token not in answer.text and token.split("_", 2)[2] not in answer.text
        assert "token" not in answer.text and "sha256" not in answer.text
    assert created["id"] in {k["id"] for k in listed.json()["data"]}
    assert one.json() == {k: v for k, v in created.items() if k != "token"}

    assert (await client.delete(f"/keys/{created['id']}")).status_code == 204
    error_of(await reader.get("/runs"), 401, "UNAUTHORIZED")  # at once on the server that revoked it
    revoked = (await client.get(f"/keys/{created['id']}")).json()["revoked_at"]
    assert revoked is not None
    assert (await client.delete(f"/keys/{created['id']}")).status_code == 204  # idempotent, first time kept
    assert (await client.get(f"/keys/{created['id']}")).json()["revoked_at"] == revoked


async def test_keys_are_stored_hashed(client: httpx.AsyncClient, js: JetStreamContext) -> None:
    created = await new_key(client, role="submit", definitions=["alpha"])
    entry = await (await js.key_value("gyoza_keys")).get(created["id"])
    assert entry.value is not None
    raw = entry.value.decode()
    secret = created["token"].split("_", 2)[2]
    assert secret not in raw and created["token"] not in raw
    stored = json.loads(raw)
    assert stored["token_sha256"] == hashlib.sha256(created["token"].encode()).hexdigest()
    assert (stored["role"], stored["scope"]["definitions"]) == ("submit", ["alpha"])


async def test_a_revoked_key_is_refused_by_another_server(
    client: httpx.AsyncClient, as_key: Any, nats_url: str, tmp_path: Path
) -> None:
    other = GyozaServer(tmp_path / "second", nats_url).start()
    try:
        created = await new_key(client, role="read")
        there = as_key(created["token"], other.url)

        # The other server's watch of the keys bucket delivers the new key, then its revocation.
        async def answers_200() -> bool:
            return (await there.get("/runs")).status_code == 200

        async def answers_401() -> bool:
            return (await there.get("/runs")).status_code == 401

        await until(answers_200, what="the second server knows the new key")
        assert (await client.delete(f"/keys/{created['id']}")).status_code == 204
        await until(answers_401, what="the second server refuses the revoked key")
        error_of(await there.get("/runs"), 401, "UNAUTHORIZED")
    finally:
        other.stop()


async def test_a_wrong_role_is_403_naming_the_role_needed(
    client: httpx.AsyncClient, as_key: Any, nothing_written: NoTrace
) -> None:
    reader = as_key((await new_key(client, role="read"))["token"])
    submitter = as_key((await new_key(client, role="submit"))["token"])
    worker = as_key((await new_key(client, role="worker", worker_id="w-" + uuid.uuid4().hex[:6]))["token"])
    cases = [
        (reader, "POST", "/runs", "this needs the submit role; the key has read"),
        (reader, "POST", "/keys", "this needs the admin role; the key has read"),
        (reader, "GET", "/keys", "this needs the admin role; the key has read"),
        (submitter, "POST", "/definitions", "this needs the admin role; the key has submit"),
        (submitter, "DELETE", "/definitions/some-op", "this needs the admin role; the key has submit"),
        (worker, "GET", "/runs", "this needs the read role; the key has worker"),
        (worker, "POST", f"/runs/{NO_RUN}/cancel", "this needs the submit role; the key has worker"),
    ]
    async with nothing_written():
        for http, method, path, message in cases:
            body = {"image": "alpine:3", "name": "some-op", "version": "1", "role": "admin"}
            response = await http.request(method, path, json=body if method == "POST" else None)
            assert error_of(response, 403, "FORBIDDEN")["message"] == message
    assert "the key has read" in error_of(await reader.get("/keys/0000000000000000"), 403)["message"]


async def test_every_key_may_ask_a_route_which_methods_it_takes(client: httpx.AsyncClient, as_key: Any) -> None:
    worker = as_key((await new_key(client, role="worker", worker_id="w-" + uuid.uuid4().hex[:6]))["token"])
    reader = as_key((await new_key(client, role="read"))["token"])
    for http in (worker, reader):
        response = await http.options("/keys")
        assert response.status_code == 200, response.text
        assert {"GET", "POST"} <= set(response.headers["Allow"].replace(" ", "").split(","))
    assert (await as_key(None).options("/keys")).status_code == 401, "a key is still needed"


async def test_a_worker_key_acts_only_as_its_worker(client: httpx.AsyncClient, as_key: Any) -> None:
    own, other = "wk-" + uuid.uuid4().hex[:6], "wk-" + uuid.uuid4().hex[:6]
    worker = as_key((await new_key(client, role="worker", worker_id=own))["token"])
    assert (await worker.post(f"/workers/{own}/heartbeat", json=HEARTBEAT)).status_code == 200
    assert (await worker.post(f"/workers/{own}/claim")).status_code == 200
    event = {"attempt": 1, "type": "INFO", "msg": "hello"}
    error_of(await worker.post(f"/runs/{NO_RUN}/events", json=event | {"worker_id": own}), 404, "RUN_NOT_FOUND")
    refused = [
        await worker.post(f"/workers/{other}/heartbeat", json=HEARTBEAT),
        await worker.post(f"/workers/{other}/claim"),
        await worker.post(f"/runs/{NO_RUN}/events", json=event | {"worker_id": other}),
        await worker.post(f"/runs/{NO_RUN}/events", json=event),  # names no worker
        # Named twice: JSON parsers differ on which one they keep, so the body is refused.
        await worker.post(
            f"/runs/{NO_RUN}/events", headers={"Content-Type": "application/json"},
            content=json.dumps(event)[:-1] + f', "worker_id": "{own}", "worker_id": "{other}"}}',
        ),
        await worker.post(f"/runs/{NO_RUN}/logs", json={"attempt": 1, "worker_id": other, "chunk": 1, "text": "x\n"}),
        await worker.put(f"/runs/{NO_RUN}/logs", params={"attempt": 1, "worker_id": other}, content=b"x\n"),
    ]  # fmt: skip
    for response in refused:
        assert error_of(response, 403, "FORBIDDEN")["message"].startswith(f"this key acts only as worker {own}")
    assert (await client.get(f"/workers/{other}")).status_code == 404, "the refused heartbeat registered nobody"


async def test_a_submit_key_limited_to_definitions(
    client: httpx.AsyncClient, as_key: Any, unique_name: str, nothing_written: NoTrace
) -> None:
    mine, theirs = unique_name, unique_name + "-other"
    for name in (mine, theirs):
        await deploy(client, definition(name))
    limited = as_key((await new_key(client, role="submit", definitions=[mine]))["token"])
    run = await limited.post(f"/definitions/{mine}/runs", json={"inputs": {"text": "hi"}})
    assert run.status_code == 201, run.text
    assert (await limited.post(f"/runs/{run.json()['id']}/cancel")).status_code == 200
    async with nothing_written():
        refused = error_of(await limited.post(f"/definitions/{theirs}/runs", json={"inputs": {"text": "hi"}}), 403)
        assert refused["message"] == f"this key creates runs only of the definitions {mine}, not of {theirs}"
        batch = {"runs": [{"inputs": {"text": "hi"}}]}
        error_of(await limited.post(f"/definitions/{theirs}/runs/batch", json=batch), 403, "FORBIDDEN")
        for path, body in [("/runs", {"image": "alpine:3"}), ("/runs/batch", {"runs": [{"image": "alpine:3"}]})]:
            message = error_of(await limited.post(path, json=body), 403, "FORBIDDEN")["message"]
            assert "ad hoc runs need an unlimited submit key" in message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "w", "role": "worker"}, "worker_id"),
        ({"name": "r", "role": "read", "worker_id": "w1"}, "worker_id"),
        ({"name": "r", "role": "read", "definitions": ["alpha"]}, "definitions"),
        ({"name": "s", "role": "submit", "definitions": []}, "definitions"),
        ({"name": "s", "role": "submit", "definitions": ["Not A Name"]}, "definitions.0"),
        ({"name": "x", "role": "boss"}, "role"),
        ({"name": "", "role": "read"}, "name"),
        ({"role": "read"}, "name"),
        ({"name": "x", "role": "read", "token": "gyz_mine"}, "token"),
        ({"name": "w", "role": "worker", "worker_id": "bad id"}, "worker_id"),
    ],
)
async def test_a_bad_key_body_is_a_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    before = (await client.get("/keys")).json()["data"]
    assert field in fields(error_of(await client.post("/keys", json=body), 400))
    assert (await client.get("/keys")).json()["data"] == before


@pytest.mark.parametrize(
    "key_id", ["0000000000000000", "nothex", "0000000000000000%0A", "%2A", "..", "ABCDEF0123456789"]
)
async def test_an_unknown_key_id_is_a_404(client: httpx.AsyncClient, key_id: str) -> None:
    for method in ("GET", "DELETE"):
        assert (await client.request(method, f"/keys/{key_id}")).status_code == 404


async def test_the_cli_creates_lists_and_revokes(server: GyozaServer, tmp_path: Path, as_key: Any) -> None:
    created = gyoza_cli(server, tmp_path, "keys", "create", "cli-node", "--role", "worker", "--worker-id", "cli-w")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    key_id = TOKEN.fullmatch(token).group(1)  # type: ignore[union-attr]
    assert "shown only now" in created.stderr
    listed = gyoza_cli(server, tmp_path, "keys", "list")
    assert listed.returncode == 0 and key_id in listed.stdout and "worker cli-w" in listed.stdout
    assert token not in listed.stdout
    limited = gyoza_cli(server, tmp_path, "keys", "create", "ci", "--role", "submit", "--definitions", "a,b", "--json")
    assert json.loads(limited.stdout)["scope"]["definitions"] == ["a", "b"]
    revoked = gyoza_cli(server, tmp_path, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    error_of(await as_key(token).post("/workers/cli-w/claim"), 401, "UNAUTHORIZED")
    bad = gyoza_cli(server, tmp_path, "keys", "create", "w", "--role", "worker")
    assert bad.returncode != 0 and "worker_id" in bad.stderr
    refused = gyoza_cli(server, tmp_path, "keys", "list", GYOZA_API_KEY=json.loads(limited.stdout)["token"])
    assert refused.returncode != 0 and "this needs the admin role; the key has submit" in refused.stderr


class KeyedWorker(WorkerProcess):
    """A worker started with ``--api-key`` (the flag wins over the GYOZA_API_KEY the harness sets)."""

    def __init__(self, token: str, *args: Any) -> None:
        super().__init__(*args)
        self.token = token

    def command(self) -> list[str]:
        return [*super().command(), "--api-key", self.token]


async def test_a_real_worker_runs_with_a_worker_key_and_a_submit_key_submits(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """End to end: ``gyoza worker start`` with only a worker key (heartbeat, claim, events, log lines, the upload),
    a run created with a limited submit key, read back with a read key."""
    name, worker_name = "echo-" + uuid.uuid4().hex[:8], unique_worker_name("keyed")
    tag, ops = "keys-e2e", {"PYTHONPATH": f"{REPO / 'tests' / 'images' / 'pyop'}:{REPO}"}
    command = [sys.executable, "-m", "gyoza.op", "ops:echo"]
    await deploy(http, {"name": name, "version": "1", "image": "local/process-runtime", "tags": [tag],
                        "command": command, "env": ops, "input_specs": {"text": {"type": "string"}}})  # fmt: skip
    worker_key = await new_key(http, role="worker", worker_id=worker_name)
    worker = KeyedWorker(worker_key["token"], worker_name, tmp_path / "work", cluster.url, "process", (tag,))
    try:
        await worker.start(http)
        submitter = (await new_key(http, role="submit", definitions=[name]))["token"]
        reader = (await new_key(http, role="read"))["token"]
        async with httpx.AsyncClient(base_url=cluster.url, headers={"X-API-Key": submitter}) as submit:
            created = await submit.post(f"/definitions/{name}/runs", json={"inputs": {"text": "keyed"}})
        assert created.status_code == 201, created.text
        async with httpx.AsyncClient(base_url=cluster.url, headers={"X-API-Key": reader}) as read:
            run = await wait_run(read, created.json()["id"], 30, state="COMPLETED")
        assert (run["outputs"], run["worker_id"]) == ({"text": "keyed"}, worker_name)
    finally:
        exit_code = worker.stop()
    assert exit_code == 0, worker.log()
    assert "FORBIDDEN" not in worker.log()


# --- every route of the OpenAPI description, with every role --------------------------------------------------------

ROLES: tuple[Role | None, ...] = (None, Role.WORKER, Role.READ, Role.SUBMIT, Role.ADMIN)  # writers last
WALK_WORKER = "w1"  # the worker holding the ``real_ids`` run


def walk_request(method: str, template: str) -> dict[str, Any]:
    """A valid request for the operation, so that only the key decides (bodies name the worker key's worker)."""
    if method == "POST" and template == "/runs/{run_id}/logs":
        return {"json": {"attempt": 1, "worker_id": WALK_WORKER, "chunk": 1, "text": "walk\n"}}
    if method == "POST" and template == "/keys":
        return {"json": {"name": "walked", "role": "read"}}
    return request_for(method, template)


def expected_refusal(principal: Principal | None, method: str, template: str, path: dict[str, str],
                     request: dict[str, Any]) -> str | None:  # fmt: skip
    rule = ROUTES[method, re.sub(r"\{(\w+)\}", r"<\1>", template)]
    if principal is None:
        return None if rule.needs is None else "no key"
    found = refusal(principal, rule, path, request.get("params", {}))
    if found is None and rule.worker_id_at is WorkerIdAt.BODY:
        found = worker_refusal(principal, request.get("json", {}).get("worker_id"))
    return found


async def test_every_route_answers_each_role_as_the_table_says(
    client: httpx.AsyncClient, as_key: Any, real_ids: dict[str, str]
) -> None:
    spec = (await client.get("/openapi.json")).json()
    operations = [(m.upper(), p) for p, item in spec["paths"].items() for m in item]
    assert len(operations) >= 40, operations
    ids = real_ids | {"key_id": (await new_key(client, role="read"))["id"]}  # DELETE /keys/{key_id} revokes it
    keys = {
        Role.READ: await new_key(client, role="read"), Role.SUBMIT: await new_key(client, role="submit"),
        Role.WORKER: await new_key(client, role="worker", worker_id=WALK_WORKER),
    }  # fmt: skip
    principals = {role: Principal(role, KeyScope(worker_id=k["scope"]["worker_id"])) for role, k in keys.items()}
    principals[Role.ADMIN] = Principal(Role.ADMIN, KeyScope())
    clients = {role: as_key(k["token"]) for role, k in keys.items()} | {Role.ADMIN: client, None: as_key(None)}
    wrong: list[str] = []
    for method, template in operations:
        path = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], template)
        params = {name: ids[name] for name in re.findall(r"\{(\w+)\}", template)}
        request = walk_request(method, template)
        for role in ROLES:
            expected = expected_refusal(principals.get(role) if role else None, method, template, params, request)
            async with clients[role].stream(method, path, **request) as response:  # streams: the status only
                status = response.status_code
            allowed = status not in (401, 403)
            want = "allowed" if expected is None else ("401" if role is None else "403")
            got = "allowed" if allowed else str(status)
            if want != got:
                wrong.append(f"{method} {template} as {role}: expected {want} ({expected}), got {status}")
    assert not wrong, "\n".join(wrong)


async def test_the_cli_and_the_sdk_set_a_quota(server: GyozaServer, tmp_path: Path) -> None:
    created = gyoza_cli(server, tmp_path, "keys", "create", "team-q", "--role", "submit", "--quota", "gpus=2,cpu=8",
                        "--json")  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert (key["quota"]["gpus"], key["quota"]["cpu"]) == (2, 8)
    changed = gyoza_cli(server, tmp_path, "keys", "quota", key["id"], "gpus=4,weight=3")
    assert changed.returncode == 0 and "gpus=4" in changed.stdout and "weight=3" in changed.stdout, changed.stderr
    lifted = gyoza_cli(server, tmp_path, "keys", "quota", key["id"], "none")
    assert lifted.returncode == 0 and "quota none" in lifted.stdout
    failed(gyoza_cli(server, tmp_path, "keys", "quota", key["id"], "gpus=-1"), 3, "quota.gpus")
    with GyozaClient(server.url, API_KEY) as sdk:
        assert sdk.set_quota(key["id"], Quota(vram_mb=80000)).quota == Quota(vram_mb=80000)
        with pytest.raises(InvalidRequest):
            sdk.create_key("reader", "read", quota={"cpu": 1})  # checked before anything is sent
