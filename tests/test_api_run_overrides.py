"""What one run of a definition may override on POST /definitions/{name}/runs (issue 14).

A run may change where and how long it runs and how it is retried: ``constraints`` and ``retry_policy`` field by
field, ``env`` added to the definition's, ``tags`` and ``timeout_seconds`` replaced. The image, command, specs and
event delivery are the definition's: a 400 names each such field and says it is set by the definition.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api_checks import NoTrace, error_of
from tests.test_api_definitions import NO_WORKER_TAG, definition, deploy
from tests.test_api_runs import create_run


@pytest.fixture
async def deployed(client: httpx.AsyncClient, unique_name: str) -> dict[str, Any]:
    return await deploy(
        client,
        definition(
            unique_name,
            constraints={"cpu": 2, "ram_mb": 1024},
            timeout_seconds=60,
            env={"MODE": "fast", "LEVEL": "1"},
            retry_policy={"max_attempts": 2, "backoff_seconds": 5, "retry_on": ["EXIT_CODE"]},
        ),
    )


async def test_a_run_overrides_what_the_definition_allows(client: httpx.AsyncClient, deployed: dict[str, Any]) -> None:
    run = await create_run(
        client,
        deployed["name"],
        constraints={"ram_mb": 4096},
        tags=[NO_WORKER_TAG, "big-memory"],
        timeout_seconds=600,
        env={"LEVEL": "2", "EXTRA": "yes"},
        retry_policy={"max_attempts": 5},
        priority=9,
    )
    assert run["constraints"] == {"cpu": 2, "ram_mb": 4096, "vram_mb": 0, "gpus": 0}
    assert run["tags"] == [NO_WORKER_TAG, "big-memory"]
    assert run["timeout_seconds"] == 600
    assert run["env"] == {"MODE": "fast", "LEVEL": "2", "EXTRA": "yes"}
    policy = run["retry_policy"]
    assert (policy["max_attempts"], policy["backoff_seconds"], policy["retry_on"]) == (5, 5, ["EXIT_CODE"])
    assert run["priority"] == 9
    # The definition itself is unchanged, and a run that overrides nothing gets it as it is.
    assert (await client.get(f"/definitions/{deployed['name']}")).json() == deployed
    plain = await create_run(client, deployed["name"])
    assert (plain["constraints"], plain["env"], plain["timeout_seconds"]) == (
        deployed["constraints"],
        deployed["env"],
        60,
    )


async def test_vram_override_implies_a_gpu_and_null_timeout_means_none(
    client: httpx.AsyncClient, deployed: dict[str, Any]
) -> None:
    run = await create_run(client, deployed["name"], constraints={"vram_mb": 8000}, timeout_seconds=None)
    assert run["constraints"] == {"cpu": 2, "ram_mb": 1024, "vram_mb": 8000, "gpus": 1}
    assert run["timeout_seconds"] is None
    two = await create_run(client, deployed["name"], constraints={"vram_mb": 8000, "gpus": 2})
    assert two["constraints"]["gpus"] == 2


async def test_fields_set_by_the_definition_are_named_in_the_400(
    client: httpx.AsyncClient, nothing_written: NoTrace, deployed: dict[str, Any]
) -> None:
    fixed = {
        "image": "other/image:1",
        "command": ["python", "-c", "print(1)"],
        "input_specs": {},
        "output_specs": {},
        "event_delivery": {"topic": "elsewhere"},
    }
    async with nothing_written():
        response = await client.post(f"/definitions/{deployed['name']}/runs", json={"inputs": {"text": "a"}, **fixed})
    problems = {d["field"]: d["problem"] for d in error_of(response, 400, "INVALID_REQUEST")["details"]}
    assert set(problems) == set(fixed)
    assert all("set by the definition" in problem for problem in problems.values()), problems


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"constraints": {"ram_mb": "lots"}}, "constraints.ram_mb"),
        ({"constraints": {"cpu": -1}}, "constraints.cpu"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"tags": ["no spaces"]}, "tags.0"),
        ({"env": {"BAD-NAME": "x"}}, "env.BAD-NAME.[key]"),
        ({"env": {"A": "nul\x00"}}, "env.A"),
        ({"retry_policy": {"max_attempts": 0}}, "retry_policy.max_attempts"),
        # Labels are a run field now (issue 10.2): a key with ":" (the filter's separator) is what is refused.
        ({"labels": {"team:a": "b"}}, "labels.team:a.[key]"),
        ({"labels": {"team": "line\nbreak"}}, "labels.team"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
async def test_invalid_overrides_are_400_naming_the_field(
    client: httpx.AsyncClient, nothing_written: NoTrace, deployed: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    async with nothing_written():
        response = await client.post(f"/definitions/{deployed['name']}/runs", json={"inputs": {"text": "a"}, **body})
    assert field in {d["field"] for d in error_of(response, 400)["details"]}
