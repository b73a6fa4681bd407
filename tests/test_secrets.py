"""Secrets over the API (issue 12.4): admins store values and registry logins, definitions name secrets by
environment variable, and no answer ever holds a value; every refusal is a 400 naming the field, storing nothing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_checks import error_of, fields
from tests.cliproc import failed, gyoza_cli
from tests.processes import GyozaServer
from tests.test_api_definitions import definition, deploy


def secret_name() -> str:
    return "s-" + uuid.uuid4().hex[:10]


class Answers:
    """Every answer a test got, to show at the end that no value is in any."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.bodies: list[str] = []

    async def __call__(self, method: str, url: str, **options: Any) -> httpx.Response:
        response = await self.client.request(method, url, **options)
        self.bodies.append(f"{method} {url} -> {response.status_code} {response.text}")
        return response

    def holding(self, *values: str) -> list[str]:
        return [body for body in self.bodies if any(value in body for value in values)]


async def test_a_secret_is_set_listed_changed_and_deleted_without_its_value_ever_shown(
    client: httpx.AsyncClient,
) -> None:
    call, name, value, changed = Answers(client), secret_name(), "hunter2-" + uuid.uuid4().hex, "v2-" + uuid.uuid4().hex
    created = await call("PUT", f"/secrets/{name}", json={"value": value})
    assert created.status_code == 201, created.text
    assert set(created.json()) == {"name", "created_at", "updated_at"}
    again = await call("PUT", f"/secrets/{name}", json={"value": changed})
    assert again.status_code == 200
    assert again.json()["created_at"] == created.json()["created_at"] < again.json()["updated_at"]
    assert (await call("GET", f"/secrets/{name}")).json()["name"] == name
    listed = (await call("GET", "/secrets")).json()["data"]
    assert name in [secret["name"] for secret in listed]
    assert (await call("DELETE", f"/secrets/{name}")).status_code == 204
    error_of(await call("GET", f"/secrets/{name}"), 404, "SECRET_NOT_FOUND")
    error_of(await call("DELETE", f"/secrets/{name}"), 404, "SECRET_NOT_FOUND")
    assert call.holding(value, changed) == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/secrets/{name}", {}, "value"),
        ("/secrets/{name}", {"value": ""}, "value"),
        ("/secrets/{name}", {"value": 7}, "value"),
        ("/secrets/{name}", {"value": "x" * (64 * 1024 + 1)}, "value"),
        ("/secrets/{name}", {"value": "ok", "extra": 1}, "extra"),
        ("/secrets/bad.name", {"value": "ok"}, "name"),
        ("/secrets/-dash-first", {"value": "ok"}, "name"),
        ("/registries/not_a_host", {"username": "u", "password": "p"}, "registry"),
        ("/registries/ghcr.io", {"username": "u"}, "password"),
        ("/registries/ghcr.io", {"username": "", "password": "p"}, "username"),
    ],
)
async def test_a_bad_secret_or_login_is_400_naming_the_field_and_stores_nothing(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], field: str
) -> None:
    before = ((await client.get("/secrets")).json(), (await client.get("/registries")).json())
    response = await client.put(path.format(name=secret_name()), json=body)
    assert fields(error_of(response, 400)) == {field}
    assert ((await client.get("/secrets")).json(), (await client.get("/registries")).json()) == before


async def test_a_registry_login_is_kept_by_registry_and_never_shows_its_password(client: httpx.AsyncClient) -> None:
    call, password = Answers(client), "tok-" + uuid.uuid4().hex
    registry = f"r{uuid.uuid4().hex[:8]}.example:5000"
    created = await call("PUT", f"/registries/{registry}", json={"username": "ci-bot", "password": password})
    assert created.status_code == 201, created.text
    assert {k: created.json()[k] for k in ("registry", "username")} == {"registry": registry, "username": "ci-bot"}
    assert (
        await call("PUT", f"/registries/{registry}", json={"username": "ci", "password": password})
    ).status_code == 200
    listed = {r["registry"]: r for r in (await call("GET", "/registries")).json()["data"]}
    assert listed[registry]["username"] == "ci" and "password" not in listed[registry]
    assert (await call("DELETE", f"/registries/{registry}")).status_code == 204
    error_of(await call("DELETE", f"/registries/{registry}"), 404, "REGISTRY_NOT_FOUND")
    assert call.holding(password) == []


async def test_a_definition_names_only_secrets_that_exist_and_not_in_env_too(
    client: httpx.AsyncClient, unique_name: str
) -> None:
    name, missing = secret_name(), secret_name()
    assert (await client.put(f"/secrets/{name}", json={"value": "v"})).status_code == 201
    refused = await client.post("/definitions", json=definition(unique_name, secrets={"A": name, "B": missing}))
    error = error_of(refused, 400)
    assert fields(error) == {"secrets.B"} and missing in error["details"][0]["problem"]
    both = await client.post("/definitions", json=definition(unique_name, env={"A": "1"}, secrets={"A": name}))
    assert fields(error_of(both, 400)) == {"secrets.A"}
    bad = await client.post("/definitions", json=definition(unique_name, secrets={"A": "no.dots"}))
    assert fields(error_of(bad, 400)) == {"secrets.A"}
    error_of(await client.get(f"/definitions/{unique_name}"), 404)  # nothing stored by any of them

    stored = await deploy(client, definition(unique_name, secrets={"DB_PASSWORD": name}))
    assert stored["secrets"] == {"DB_PASSWORD": name}
    run = await client.post(f"/definitions/{unique_name}/runs", json={"inputs": {"text": "hi"}})
    assert run.status_code == 201, run.text
    assert (run.json()["secrets"], run.json()["env"]) == ({"DB_PASSWORD": name}, {})


async def test_a_run_cannot_bring_or_change_secrets(client: httpx.AsyncClient, unique_name: str) -> None:
    await deploy(client, definition(unique_name))
    adhoc = await client.post("/runs", json={"image": "alpine:3", "secrets": {"A": secret_name()}})
    assert fields(error_of(adhoc, 400)) == {"secrets"}
    override = await client.post(
        f"/definitions/{unique_name}/runs", json={"inputs": {"text": "hi"}, "secrets": {"A": secret_name()}}
    )
    assert fields(error_of(override, 400)) == {"secrets"}


async def test_the_cli_sets_lists_and_deletes_reading_values_from_stdin(server: GyozaServer, tmp_path: Path) -> None:
    name, value = secret_name(), "from-stdin-" + uuid.uuid4().hex
    set_ = gyoza_cli(server, tmp_path, "secrets", "set", name, stdin=value + "\n")
    assert set_.returncode == 0, set_.stderr
    listed = gyoza_cli(server, tmp_path, "secrets", "list", "--json")
    assert name in [s["name"] for s in json.loads(listed.stdout)["data"]] and value not in listed.stdout
    login = gyoza_cli(server, tmp_path, "secrets", "registry-login", "ghcr.io", "-u", "bot", stdin=value)
    assert login.returncode == 0, login.stderr
    registries = gyoza_cli(server, tmp_path, "secrets", "registries")
    assert "ghcr.io" in registries.stdout and "bot" in registries.stdout and value not in registries.stdout
    assert gyoza_cli(server, tmp_path, "secrets", "registry-logout", "ghcr.io").returncode == 0
    assert gyoza_cli(server, tmp_path, "secrets", "delete", name).returncode == 0
    failed(gyoza_cli(server, tmp_path, "secrets", "delete", name), 3, "SECRET_NOT_FOUND", name)
