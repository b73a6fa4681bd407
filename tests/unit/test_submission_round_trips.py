"""Less work per submission (issue 10 item 3) over the in-memory bus: a run creation reads no KV for its definition
while the watch-fed cache is current (this process's own deploys and deletes seen at once, another process's new
definition read from KV on a miss), and it waits for the KV create and the run request together, not one by one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gyoza.bus.memory import MemoryBus
from gyoza.errors import DefinitionNotFound
from gyoza.schema import AdHocRunIn, OpDefinitionIn, RunFromDefinitionIn
from gyoza.services.clock import ManualClock
from gyoza.services.definitions import DefinitionService
from gyoza.services.runs import RunService
from gyoza.supervision import TaskFailures

DEFINITION = {"name": "echo", "version": "1", "image": "busybox", "constraints": {"cpu": 1, "ram_mb": 64}}


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    clock = ManualClock()
    memory = MemoryBus(clock.time)
    yield memory
    await memory.close()


async def following(bus: MemoryBus) -> DefinitionService:
    service = DefinitionService(bus)
    await service.follow(TaskFailures())
    for _ in range(100):  # the replay of an in-memory bucket takes a few loop turns
        if service._following:
            return service
        await asyncio.sleep(0)
    raise AssertionError("the definitions cache never caught up")


def count_reads(bus: MemoryBus) -> list[str]:
    reads: list[str] = []
    get = bus.definitions.get

    async def counted(key: str) -> tuple[bytes, int]:
        reads.append(key)
        return await get(key)

    bus.definitions.get = counted  # type: ignore[method-assign]
    return reads


def deploy(version: str, **fields: Any) -> OpDefinitionIn:
    return OpDefinitionIn.model_validate({**DEFINITION, "version": version, **fields})


async def test_a_run_creation_reads_no_kv_for_its_definition(bus: MemoryBus) -> None:
    definitions = await following(bus)
    runs = RunService(bus, definitions)
    await definitions.deploy(deploy("1"))
    reads = count_reads(bus)
    for version in (None, "1"):
        record, _ = await runs.create_from_definition("echo", RunFromDefinitionIn(version=version), None)
        assert record.definition_version == "1"
    assert reads == []
    await definitions.stop()


async def test_this_processes_deploys_and_deletes_are_seen_at_once(bus: MemoryBus) -> None:
    definitions = await following(bus)
    await definitions.deploy(deploy("1"))
    await definitions.deploy(deploy("2", image="busybox:2"))
    assert (await definitions.get("echo")).version == "2"  # not the watch's older pointer
    await definitions.delete("echo")
    with pytest.raises(DefinitionNotFound):
        await definitions.get("echo")
    await asyncio.sleep(0)  # let the watch deliver the older puts and the delete
    with pytest.raises(DefinitionNotFound):
        await definitions.get("echo", "1")
    await definitions.deploy(deploy("3", image="busybox:3"))
    assert (await definitions.get("echo")).version == "3"
    await definitions.stop()


async def test_a_definition_another_process_just_deployed_is_found(bus: MemoryBus) -> None:
    here, there = await following(bus), DefinitionService(bus)
    await there.deploy(deploy("1"))  # the watch of ``here`` has not delivered it yet
    assert (await here.get("echo")).version == "1"
    assert (await here.get("echo", "1")).version == "1"
    await here.stop()


async def test_the_run_request_is_sent_while_the_run_is_stored(bus: MemoryBus) -> None:
    """The KV create and the durable publish wait for each other here: done one after the other, neither returns."""
    both = asyncio.Barrier(2)

    def waiting_for_the_other(call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            await both.wait()
            return await call(*args, **kwargs)

        return wrapped

    bus.runs.create = waiting_for_the_other(bus.runs.create)  # type: ignore[method-assign]
    bus.publish_durable = waiting_for_the_other(bus.publish_durable)  # type: ignore[method-assign]
    runs = RunService(bus, DefinitionService(bus))
    body = AdHocRunIn.model_validate({"image": "busybox", "constraints": {"cpu": 1, "ram_mb": 64}})
    record, created = await asyncio.wait_for(runs.create_adhoc(body, None), 5)
    assert created and (await runs.get(record.id)).id == record.id
