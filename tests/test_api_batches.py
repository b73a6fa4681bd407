"""Batches over HTTP (issue 10.2): create many runs at once, all or nothing; labels and batch filters; GET /batches;
bulk cancel and retry by filter."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.api_checks import NoTrace, error_of, fields
from tests.test_api_definitions import NO_WORKER_TAG, definition, deploy


def adhoc(n: int, **fields: Any) -> dict[str, Any]:
    return {"image": "alpine:3", "inputs": {"n": n}, "tags": [NO_WORKER_TAG], **fields}


async def batch(client: httpx.AsyncClient, items: list[dict[str, Any]], expected: int = 201) -> dict[str, Any]:
    response = await client.post("/runs/batch", json={"runs": items})
    assert response.status_code == expected, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_a_definition_batch_is_201_in_request_order(client: httpx.AsyncClient, unique_name: str) -> None:
    await deploy(client, definition(unique_name))
    items = [{"inputs": {"text": f"t{i}"}, "labels": {"team": "ml"}} for i in range(30)]
    response = await client.post(f"/definitions/{unique_name}/runs/batch", json={"runs": items})
    assert response.status_code == 201, response.text
    body = response.json()
    assert [run["inputs"] for run in body["data"]] == [{"text": f"t{i}", "top_k": 3} for i in range(30)]
    assert {run["batch_id"] for run in body["data"]} == {body["batch_id"]}
    assert all(run["state"] == "PENDING" and run["labels"] == {"team": "ml"} for run in body["data"])
    stored = (await client.get(f"/runs/{body['data'][7]['id']}")).json()
    assert stored["inputs"]["text"] == "t7" and stored["batch_id"] == body["batch_id"]


async def test_one_bad_item_is_400_by_index_and_stores_nothing(
    client: httpx.AsyncClient, unique_name: str, nothing_written: NoTrace
) -> None:
    await deploy(client, definition(unique_name))
    items = [{"inputs": {"text": "ok"}}, {"inputs": {"text": "x", "top_k": "many"}}, {"inputs": {"text": "y"}}]
    items += [{"inputs": {}, "priority": 500}]
    async with nothing_written():
        shapes = await client.post(f"/definitions/{unique_name}/runs/batch", json={"runs": items})
        specs = await client.post(f"/definitions/{unique_name}/runs/batch", json={"runs": items[:3]})
        empty = await client.post("/runs/batch", json={"runs": []})
        too_many = await client.post("/runs/batch", json={"runs": [adhoc(i) for i in range(1001)]})
        unknown = await client.post("/definitions/no-such-op/runs/batch", json={"runs": [{}]})
        header = await client.post("/runs/batch", json={"runs": [adhoc(0)]}, headers={"Idempotency-Key": "k"})
    assert fields(error_of(shapes, 400, "INVALID_REQUEST")) == {"runs[3].priority"}
    assert fields(error_of(specs, 400, "INVALID_INPUTS")) == {"runs[1].inputs.top_k"}
    assert fields(error_of(empty, 400)) == {"runs"} and fields(error_of(too_many, 400)) == {"runs"}
    error_of(unknown, 404, "DEFINITION_NOT_FOUND")
    assert fields(error_of(header, 400)) == {"Idempotency-Key"}


async def test_a_repeated_batch_is_200_with_the_same_runs(client: httpx.AsyncClient) -> None:
    keys = [f"order-{uuid.uuid4()}" for _ in range(4)]
    items = [adhoc(i, idempotency_key=key) for i, key in enumerate(keys)]
    first = await batch(client, items)
    again = await batch(client, items, expected=200)
    assert [r["id"] for r in again["data"]] == [r["id"] for r in first["data"]]
    assert again["batch_id"] == first["batch_id"]
    # One new item among repeats: 201, the originals in their slots; a key twice: one run in both slots.
    fresh = f"order-{uuid.uuid4()}"
    mixed = await batch(client, [items[2], adhoc(9, idempotency_key=fresh), adhoc(9, idempotency_key=fresh)])
    assert mixed["data"][0]["id"] == first["data"][2]["id"]
    assert mixed["data"][1]["id"] == mixed["data"][2]["id"] != first["data"][2]["id"]


async def test_labels_and_batch_id_filter_runs(client: httpx.AsyncClient) -> None:
    tag = uuid.uuid4().hex
    first = await batch(client, [adhoc(i, labels={"exp": tag, "arm": "a" if i % 2 else "b"}) for i in range(6)])
    await batch(client, [adhoc(9, labels={"exp": tag, "arm": "a"})])
    single = await client.post("/runs", json=adhoc(10, labels={"exp": tag, "arm": "a"}))
    assert single.status_code == 201 and single.json()["labels"] == {"exp": tag, "arm": "a"}
    assert single.json()["batch_id"] is None
    both = (await client.get("/runs", params=[("label", f"exp:{tag}"), ("label", "arm:a"), ("limit", 100)])).json()
    assert len(both["data"]) == 5 and all(r["labels"]["arm"] == "a" for r in both["data"])
    conflicting = [("label", f"exp:{tag}"), ("label", "arm:a"), ("label", "arm:b")]
    assert (await client.get("/runs", params=conflicting)).json()["data"] == []
    of_batch = (await client.get("/runs", params={"batch_id": first["batch_id"], "limit": 100})).json()["data"]
    assert sorted(r["id"] for r in of_batch) == sorted(r["id"] for r in first["data"])
    error = error_of(await client.get("/runs", params={"label": "no-colon"}), 400)
    assert fields(error) == {"label"}
    bad_label = await client.post("/runs", json=adhoc(0, labels={"bad key": "v"}))
    assert fields(error_of(bad_label, 400)) == {"labels.bad key.[key]"}


async def test_batch_counts_and_bulk_cancel_and_retry(client: httpx.AsyncClient) -> None:
    created = await batch(client, [adhoc(i) for i in range(10)])
    batch_id, ids = created["batch_id"], [r["id"] for r in created["data"]]
    view = (await client.get(f"/batches/{batch_id}")).json()
    assert (view["total"], view["counts"]["PENDING"], view["finished"], view["progress"]) == (10, 10, 0, 0)
    await client.post(f"/runs/{ids[0]}/cancel")
    first = (await client.post("/runs/cancel", json={"batch_id": batch_id, "state": ["PENDING"]})).json()
    assert first == {"matched": 9, "changed": 9}
    assert (await client.post("/runs/cancel", json={"batch_id": batch_id})).json() == {"matched": 10, "changed": 0}
    view = (await client.get(f"/batches/{batch_id}")).json()
    assert (view["counts"]["CANCELLED"], view["finished"], view["progress"]) == (10, 10, 100)
    retried = (await client.post("/runs/retry", json={"batch_id": batch_id, "reason": "USER"})).json()
    assert retried == {"matched": 10, "changed": 10}
    assert (await client.get(f"/batches/{batch_id}")).json()["counts"]["PENDING"] == 10
    await client.post("/runs/cancel", json={"batch_id": batch_id})


async def test_bulk_actions_refuse_an_empty_filter(client: httpx.AsyncClient, nothing_written: NoTrace) -> None:
    async with nothing_written():
        for path in ("/runs/cancel", "/runs/retry"):
            for body in ({}, {"labels": {}}):
                error = error_of(await client.post(path, json=body), 400, "INVALID_REQUEST")
                assert "every run" in error["message"]
    error_of(await client.get(f"/batches/{uuid.uuid4()}"), 404, "NOT_FOUND")
    error_of(await client.get("/batches/not-an-id"), 404, "NOT_FOUND")


async def test_the_batch_body_limit_is_8_mib(client: httpx.AsyncClient) -> None:
    big = "x" * (900 * 1024)
    fits = await client.post("/runs/batch", json={"runs": [adhoc(i, env={"PAD": big}) for i in range(2)]})
    assert fits.status_code == 201, fits.text
    await client.post("/runs/cancel", json={"batch_id": fits.json()["batch_id"]})
    single = await client.post("/runs", json=adhoc(0, env={"PAD": big * 2}))
    error_of(single, 413, "PAYLOAD_TOO_LARGE")
    over = await client.post("/runs/batch", json={"runs": [adhoc(i, env={"PAD": big}) for i in range(10)]})
    assert "8 MiB" in error_of(over, 413, "PAYLOAD_TOO_LARGE")["message"]
