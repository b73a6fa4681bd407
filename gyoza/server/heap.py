"""The server process's garbage collector, set for a process that holds a large, long-lived state.

A server keeps a model of every waiting run (the scheduler's queue, one object or two per run) and creates and drops
many short-lived objects per request and per record version. With CPython's defaults (a young collection every 700
net allocations) those short-lived objects are often promoted before they die, and the old generation's full
collections, each scanning every long-lived object, come often: with 100,000 runs waiting, placement ran about 30 %
slower than with the collector off (docs/performance.md, "Garbage collection").

So, once the server is ready: collect, then freeze what start-up built (modules, schemas, the replayed state), which
no later collection needs to scan again; and collect the young generation every ``YOUNG_THRESHOLD`` allocations, so
that most short-lived objects die young. Full collections still run by CPython's own rule: cycles are still freed.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000


def settle() -> None:
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
