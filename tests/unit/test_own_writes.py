"""A process's own writes come back through its watch as the records it wrote, not as a second parse."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import BaseModel

from gyoza.bus.memory import MemoryBus
from gyoza.bus.port import INITIAL_VALUES_DONE, KeyChange
from gyoza.bus.records import RecordStore


class Note(BaseModel):
    text: str


async def _next(watch: AsyncIterator[KeyChange | None], store: RecordStore[Note], count: int) -> list[Note]:
    got: list[Note] = []
    while len(got) < count:
        change = await anext(watch)
        if change is not INITIAL_VALUES_DONE and change.value is not None:
            got.append(store.decode(change.key, change.value))
    return got


async def test_a_watch_hands_back_the_written_records_and_parses_the_rest() -> None:
    bus = MemoryBus()
    mine, theirs = RecordStore(bus.workers, Note), RecordStore(bus.workers, Note)
    live = bus.workers.watch()
    assert await anext(live) is INITIAL_VALUES_DONE  # watching from here on
    written, batch_one, batch_two, updated = Note(text="mine"), Note(text="one"), Note(text="two"), Note(text="upd")
    revision = await mine.create("a", written)
    await theirs.create("b", Note(text="theirs"))
    await mine.create_many([("c", batch_one), ("d", batch_two)])
    got = await _next(live, mine, 4)
    assert got[0] is written and got[2] is batch_one and got[3] is batch_two
    assert got[1] == Note(text="theirs")
    await mine.write("a", updated, revision)
    assert (await _next(live, mine, 1))[0] is updated
    # Handed back once: a replay of the same bytes parses them again (equal records, new objects).
    again = await _next(bus.workers.watch(), mine, 4)
    assert [note.text for note in again] == ["theirs", "one", "two", "upd"]
    assert not any(note is old for note in again for old in (written, batch_one, batch_two, updated))


async def test_bytes_that_differ_from_the_write_are_parsed() -> None:
    bus = MemoryBus()
    mine = RecordStore(bus.workers, Note)
    record = Note(text="sent")
    await mine.create("k", record)
    assert mine.decode("k", b'{"text": "other"}') == Note(text="other")
    assert mine.decode("k", Note(text="sent").model_dump_json().encode()) is record
    # A later write of the key before the watch caught up: the earlier version is parsed, the later handed back.
    first, second = Note(text="first"), Note(text="second")
    revision = await mine.create("j", first)
    await mine.write("j", second, revision)
    assert mine.decode("j", first.model_dump_json().encode()) == first
    assert mine.decode("j", second.model_dump_json().encode()) is second
