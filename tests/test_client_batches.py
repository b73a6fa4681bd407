"""The SDK's batch calls against a live server: create_runs, map (sync and async), get_batch, bulk cancel/retry,
delete and purge."""

from __future__ import annotations

import uuid

import httpx
import pytest

from gyoza.client import AsyncGyozaClient, GyozaClient
from gyoza.errors import Conflict, InvalidInputs, InvalidRequest, RunNotFound
from tests.processes import API_KEY, GyozaServer
from tests.test_api_definitions import NO_WORKER_TAG, definition, deploy


async def test_create_runs_get_batch_and_bulk_actions(
    server: GyozaServer, client: httpx.AsyncClient, unique_name: str
) -> None:
    await deploy(client, definition(unique_name))
    with GyozaClient(server.url, API_KEY) as sdk:
        keys = [f"k-{uuid.uuid4()}" for _ in range(3)]
        batch = sdk.create_runs(unique_name, [{"text": "a"}, {"text": "b"}, {"text": "c"}], keys, labels={"x": "1"})
        assert [r.inputs["text"] for r in batch.data] == ["a", "b", "c"]
        assert all(r.batch_id == batch.batch_id and r.labels == {"x": "1"} for r in batch.data)
        again = sdk.create_runs(unique_name, [{"text": "a"}, {"text": "b"}, {"text": "c"}], keys)
        assert [r.id for r in again.data] == [r.id for r in batch.data]
        assert batch.batch_id is not None
        assert sdk.get_batch(batch.batch_id).counts["PENDING"] == 3
        with pytest.raises(InvalidInputs) as refused:
            sdk.create_runs(unique_name, [{"text": "ok"}, {"text": 1}])
        assert [d["field"] for d in refused.value.details] == ["runs[1].inputs.text"]
        assert sdk.cancel_runs(batch_id=batch.batch_id).model_dump() == {"matched": 3, "changed": 3}
        assert sdk.retry_runs(batch_id=batch.batch_id, reason="USER").changed == 3
        assert {r.id for r in sdk.list_runs(batch_id=batch.batch_id).data} == {r.id for r in batch.data}
        sdk.cancel_runs(batch_id=batch.batch_id)
        with pytest.raises(InvalidRequest):
            sdk.cancel_runs()
        single = sdk.create_run(unique_name, {"text": "one"}, labels={"x": "2"})
        assert single.labels == {"x": "2"} and single.batch_id is None
        assert sdk.cancel_runs(labels={"x": "2"}).model_dump() == {"matched": 1, "changed": 1}


async def test_map_yields_every_run_in_order_sync_and_async(
    server: GyozaServer, client: httpx.AsyncClient, unique_name: str
) -> None:
    await deploy(client, definition(unique_name))
    tag = uuid.uuid4().hex
    with GyozaClient(server.url, API_KEY) as sdk:
        runs = list(sdk.map(unique_name, ({"text": str(i)} for i in range(25)), batch_size=10, labels={"m": tag}))
    assert [r.inputs["text"] for r in runs] == [str(i) for i in range(25)]
    assert len({r.batch_id for r in runs}) == 3
    async with AsyncGyozaClient(server.url, API_KEY) as sdk_async:
        seen = [r async for r in sdk_async.map(unique_name, [{"text": "z"}] * 7, batch_size=5, labels={"m": tag})]
        assert len(seen) == 7 and len({r.batch_id for r in seen}) == 2
        assert (await sdk_async.cancel_runs(labels={"m": tag})).matched == 32
        with pytest.raises(InvalidRequest):
            [r async for r in sdk_async.map(unique_name, [{"text": "z"}], batch_size=0)]


async def test_delete_and_purge_runs_sync_and_async(server: GyozaServer) -> None:
    tag = uuid.uuid4().hex
    with GyozaClient(server.url, API_KEY) as sdk:
        first, *rest = [sdk.create_adhoc_run("alpine:3", tags=[NO_WORKER_TAG], labels={"p": tag}) for _ in range(3)]
        with pytest.raises(Conflict):
            sdk.delete_run(first.id)  # PENDING: cancel it first
        sdk.cancel_run(first.id)
        sdk.delete_run(first.id)
        with pytest.raises(RunNotFound):
            sdk.get_run(first.id)
    async with AsyncGyozaClient(server.url, API_KEY) as sdk_async:
        await sdk_async.cancel_runs(labels={"p": tag})
        assert (await sdk_async.purge_runs(labels={"p": tag})).model_dump() == {"matched": 2, "changed": 2}
        for run in rest:
            with pytest.raises(RunNotFound):
                await sdk_async.delete_run(run.id)
