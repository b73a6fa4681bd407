"""The SDK's ``create_run`` takes the per-run overrides ``POST /definitions/{name}/runs`` accepts, in both clients,
and sends only what was given (issue 9 item 4)."""

from __future__ import annotations

from gyoza.client import AsyncGyozaClient
from gyoza.schema import Concurrency, Constraints, Retention
from tests.processes import API_KEY, GyozaServer
from tests.test_api_definitions import NO_WORKER_TAG, definition


async def test_create_run_overrides(server: GyozaServer, unique_name: str) -> None:
    async with AsyncGyozaClient(server.url, API_KEY) as sdk:
        await sdk.deploy_definition(
            definition(
                unique_name,
                constraints={"cpu": 1, "vram_mb": 8000, "gpus": 2},
                env={"A": "1"},
                tags=[NO_WORKER_TAG],
                retention={"completed": "7d"},
            )
        )
        plain = await sdk.create_run(unique_name, {"text": "hi"})
        run = await sdk.create_run(
            unique_name, {"text": "hi"}, priority=7, constraints=Constraints(vram_mb=16000),
            retry_policy={"max_attempts": 4}, timeout_seconds=30, env={"B": "2"}, tags=[NO_WORKER_TAG, "extra"],
            retention=Retention(failed="30d"), concurrency={"key": "team-a", "limit": 2},
        )  # fmt: skip
    assert (plain.constraints.vram_mb, plain.retry_policy.max_attempts, plain.timeout_seconds) == (8000, 1, None)
    assert (run.constraints.cpu, run.constraints.vram_mb, run.constraints.gpus) == (1, 16000, 2)
    assert (run.retry_policy.max_attempts, run.timeout_seconds, run.priority) == (4, 30, 7)
    assert (run.env, run.tags) == ({"A": "1", "B": "2"}, [NO_WORKER_TAG, "extra"])
    assert (plain.concurrency, run.concurrency) == (None, Concurrency(key="team-a", limit=2))
    assert (plain.retention, run.retention) == (Retention(completed="7d"), Retention(completed="7d", failed="30d"))
