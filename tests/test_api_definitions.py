"""POST/GET/DELETE /definitions over HTTP (SPEC §2.1, §4): versions are immutable, latest is the last deployed."""

from __future__ import annotations

from typing import Any

import httpx

# Test runs carry a tag no worker has, so that a scheduler in the shared server never places them; the tests move
# runs along themselves (tests/scheduling.py).
NO_WORKER_TAG = "api-tests-no-worker"


def definition(name: str, version: str = "1.0.0", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "version": version,
        "image": f"registry.example/{name}:{version}",
        "description": "classifies text",
        "input_specs": {
            "text": {"type": "string"},
            "top_k": {"type": "int", "required": False, "default": 3, "min": 1, "max": 10},
        },
        "output_specs": {"label": {"type": "string"}},
        "constraints": {"cpu": 1.5, "ram_mb": 512},
        "tags": [NO_WORKER_TAG],
    }
    body.update(fields)
    return body


async def deploy(client: httpx.AsyncClient, body: dict[str, Any], expected: int = 201) -> dict[str, Any]:
    response = await client.post("/definitions", json=body)
    assert response.status_code == expected, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_new_version_is_201_with_server_fields(client: httpx.AsyncClient, unique_name: str) -> None:
    stored = await deploy(client, definition(unique_name))
    assert stored["id"] == stored["name"] == unique_name
    assert stored["version"] == "1.0.0"
    assert stored["input_specs"]["top_k"]["default"] == 3
    assert stored["constraints"] == {"cpu": 1.5, "ram_mb": 512, "vram_mb": 0, "gpus": 0}
    assert stored["retry_policy"]["max_attempts"] == 1
    assert stored["created_at"]


async def test_vram_request_implies_one_gpu(client: httpx.AsyncClient, unique_name: str) -> None:
    stored = await deploy(client, definition(unique_name, constraints={"vram_mb": 4000}))
    assert stored["constraints"]["gpus"] == 1


async def test_identical_repost_is_200_and_returns_the_original(client: httpx.AsyncClient, unique_name: str) -> None:
    first = await deploy(client, definition(unique_name))
    again = await deploy(client, definition(unique_name), expected=200)
    assert again == first  # same created_at: nothing was stored again


async def test_different_content_for_a_stored_version_is_409(client: httpx.AsyncClient, unique_name: str) -> None:
    await deploy(client, definition(unique_name))
    response = await client.post("/definitions", json=definition(unique_name, image="other:1"))
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "VERSION_CONFLICT"
    assert "1.0.0" in error["message"]
    # The stored version is unchanged.
    stored = (await client.get(f"/definitions/{unique_name}", params={"version": "1.0.0"})).json()
    assert stored["image"] == f"registry.example/{unique_name}:1.0.0"


async def test_latest_is_the_most_recently_deployed_not_the_highest(
    client: httpx.AsyncClient, unique_name: str
) -> None:
    await deploy(client, definition(unique_name, "2.0.0"))
    await deploy(client, definition(unique_name, "1.5.0"))
    latest = await client.get(f"/definitions/{unique_name}")
    assert latest.status_code == 200
    assert latest.json()["version"] == "1.5.0"


async def test_get_a_given_version(client: httpx.AsyncClient, unique_name: str) -> None:
    await deploy(client, definition(unique_name, "1.0.0"))
    await deploy(client, definition(unique_name, "1.1.0", description="better"))
    old = await client.get(f"/definitions/{unique_name}", params={"version": "1.0.0"})
    assert old.status_code == 200
    assert (old.json()["version"], old.json()["description"]) == ("1.0.0", "classifies text")
    missing = await client.get(f"/definitions/{unique_name}", params={"version": "9.9.9"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "DEFINITION_NOT_FOUND"


async def test_unknown_definition_is_404(client: httpx.AsyncClient, unique_name: str) -> None:
    for path in (f"/definitions/{unique_name}", f"/definitions/{unique_name}/versions", "/definitions/Not_A_Name!"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] in ("DEFINITION_NOT_FOUND", "NOT_FOUND")


async def test_versions_newest_first(client: httpx.AsyncClient, unique_name: str) -> None:
    for version in ("1.0.0", "3.0.0", "2.0.0"):
        await deploy(client, definition(unique_name, version))
    response = await client.get(f"/definitions/{unique_name}/versions")
    assert response.status_code == 200
    assert [d["version"] for d in response.json()["data"]] == ["2.0.0", "3.0.0", "1.0.0"]


async def test_list_shows_the_latest_of_each_name(client: httpx.AsyncClient, unique_name: str) -> None:
    other = unique_name + "-b"
    await deploy(client, definition(unique_name, "1.0.0"))
    await deploy(client, definition(unique_name, "2.0.0"))
    await deploy(client, definition(other, "0.1.0"))
    response = await client.get("/definitions")
    assert response.status_code == 200
    ours = {d["name"]: d["version"] for d in response.json()["data"] if d["name"] in (unique_name, other)}
    assert ours == {unique_name: "2.0.0", other: "0.1.0"}


async def test_list_all_versions(client: httpx.AsyncClient, unique_name: str) -> None:
    await deploy(client, definition(unique_name, "1.0.0"))
    await deploy(client, definition(unique_name, "2.0.0"))
    response = await client.get("/definitions", params={"all_versions": "true"})
    assert response.status_code == 200
    versions = sorted(d["version"] for d in response.json()["data"] if d["name"] == unique_name)
    assert versions == ["1.0.0", "2.0.0"]


async def test_delete_removes_the_name_but_not_its_runs(client: httpx.AsyncClient, unique_name: str) -> None:
    await deploy(client, definition(unique_name))
    run = (await client.post(f"/definitions/{unique_name}/runs", json={"inputs": {"text": "hi"}})).json()

    deleted = await client.delete(f"/definitions/{unique_name}")
    assert deleted.status_code == 204
    assert deleted.content == b""

    assert (await client.get(f"/definitions/{unique_name}")).status_code == 404
    assert (await client.get(f"/definitions/{unique_name}/versions")).status_code == 404
    listed = (await client.get("/definitions", params={"all_versions": "true"})).json()["data"]
    assert all(d["name"] != unique_name for d in listed)
    new_run = await client.post(f"/definitions/{unique_name}/runs", json={"inputs": {"text": "hi"}})
    assert new_run.status_code == 404
    assert new_run.json()["error"]["code"] == "DEFINITION_NOT_FOUND"
    assert (await client.delete(f"/definitions/{unique_name}")).status_code == 404

    # The existing run keeps its own copy of the definition.
    kept = await client.get(f"/runs/{run['id']}")
    assert kept.status_code == 200
    assert kept.json()["op_definition"] == unique_name
    assert kept.json()["image"] == run["image"]
    assert kept.json()["state"] == "PENDING"


async def test_a_deleted_name_can_be_deployed_again(client: httpx.AsyncClient, unique_name: str) -> None:
    await deploy(client, definition(unique_name))
    assert (await client.delete(f"/definitions/{unique_name}")).status_code == 204
    # Different content under the same version is a fresh deploy now, not a conflict.
    again = await deploy(client, definition(unique_name, image="fresh:1"))
    assert again["image"] == "fresh:1"
    versions = (await client.get(f"/definitions/{unique_name}/versions")).json()["data"]
    assert [v["image"] for v in versions] == ["fresh:1"]
