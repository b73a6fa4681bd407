"""Checks shared by the refused-request tests: the uniform error body, and that a refusal left no trace in KV."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from gyoza.bus import names
from tests.test_api_runs import run_keys

# Streams only requests append to: any new message there is a trace. (last_seq, not messages.)
APPEND_ONLY_STREAMS = ("KV_gyoza_definitions", "KV_gyoza_idempotency")


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The error object of a refused response, after checking the status and the uniform shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def fields(error: dict[str, Any]) -> set[str]:
    return {d["field"] for d in error["details"]}


async def run_snapshot(js: JetStreamContext, run_id: str) -> dict[str, Any]:
    """The stored run record, minus why a PENDING attempt waits (a scheduler may refresh that at any time)."""
    entry = await (await js.key_value("gyoza_runs")).get(run_id)
    record: dict[str, Any] = json.loads(entry.value or b"{}")
    for attempt in record["attempts"]:
        if attempt["state"] == "PENDING":
            attempt["state_reason"] = None
    return record


NoTrace = Callable[..., AbstractAsyncContextManager[None]]


@pytest.fixture
def nothing_written(js: JetStreamContext, nc: Client) -> NoTrace:
    """``async with nothing_written(*run_ids):`` fails when the block leaves a trace in JetStream."""
    return functools.partial(_nothing_written, js, nc)


@asynccontextmanager
async def _nothing_written(js: JetStreamContext, nc: Client, *run_ids: str) -> AsyncIterator[None]:
    """Asserts that the block stores nothing: no definition, idempotency key, run request or new run, and no change
    to the given runs."""

    async def snapshot() -> dict[str, Any]:
        state = {s: (await js.stream_info(s)).state.last_seq for s in APPEND_ONLY_STREAMS}
        state["runs"] = await run_keys(nc)
        state.update({run_id: await run_snapshot(js, run_id) for run_id in run_ids})
        return state

    requested: list[str] = []

    async def heard(msg: Msg) -> None:
        requested.append(json.loads(msg.data)["run_id"])

    # Run requests are heard rather than counted: the session server's scheduler may, meanwhile, put another test's
    # run back in the queue (its worker timed out), and that is not this block's trace.
    subscription = await nc.subscribe(names.RUN_REQUESTED_SUBJECT, cb=heard)
    await nc.flush()
    started = datetime.now(UTC)
    before = await snapshot()
    yield
    after = await snapshot()
    await nc.flush()
    await subscription.unsubscribe()
    assert after == before
    runs = await js.key_value("gyoza_runs")
    for run_id in requested:
        assert run_id not in run_ids, f"a run request for {run_id}"
        entry = await runs.get(run_id)  # a request for a run that was not stored would raise here
        assert datetime.fromisoformat(json.loads(entry.value or b"{}")["created_at"]) < started, run_id
