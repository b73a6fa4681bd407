"""Background tasks that never die silently (standard library and gyoza.errors only, so every layer may use it).

A long-running loop runs ``supervised``: when it raises (or ends), it is restarted after a bounded, growing delay.
The first failure of a streak is logged with its traceback, the repeats only at debug level, and every failure is
counted by task name in ``TaskFailures``, which GET /metrics shows as ``gyoza_background_task_failures_total``.
One-shot tasks go through ``Background``, which logs and counts the failure of any of them the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from gyoza.errors import Unavailable

log = logging.getLogger(__name__)

FIRST_RESTART_S = 0.05
MAX_RESTART_S = 5.0
# A loop that ran this long before failing had recovered: its failure starts a new streak (and is logged again).
HEALTHY_AFTER_S = 30.0
# How long ``stop_task`` waits for a cancelled task before cancelling it again.
CANCEL_AGAIN_S = 0.1


class TaskFailures:
    """How often each background task failed, by name: one per server process, read when /metrics is scraped."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def record(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


def restart_delay(streak: int, first: float = FIRST_RESTART_S, cap: float = MAX_RESTART_S) -> float:
    """The pause before the ``streak``-th restart in a row: doubling from ``first``, never above ``cap``."""
    return float(min(first * 2 ** min(streak - 1, 60), cap))


async def supervised(
    name: str,
    loop: Callable[[], Awaitable[None]],
    failures: TaskFailures,
    started: asyncio.Event | None = None,
    first: float = FIRST_RESTART_S,
    cap: float = MAX_RESTART_S,
) -> None:
    """Run ``loop()`` until cancelled, restarting it whenever it raises or returns.

    With ``started``, a failure before that event is set propagates instead: a component that cannot even start
    (its first replay failed) fails its caller's start-up rather than retrying behind its back.
    """
    streak = 0
    while True:
        began = time.monotonic()
        try:
            await loop()
            problem: BaseException | None = None
        except Exception as exc:
            if started is not None and not started.is_set():
                raise
            problem = exc
        if time.monotonic() - began >= HEALTHY_AFTER_S:
            streak = 0
        streak += 1
        failures.record(name)
        delay = restart_delay(streak, first, cap)
        if streak == 1 and isinstance(problem, Unavailable):
            # NATS away is an outage, not a bug: one line saying so, no traceback.
            log.warning("background task %s paused (%s); restarting it", name, problem.message)
        elif streak == 1:
            log.error("background task %s %s; restarting it", name, "failed" if problem else "ended",
                      exc_info=problem)  # fmt: skip
        else:
            log.debug("background task %s failed again (%d in a row): %r", name, streak, problem)
        await asyncio.sleep(delay)


async def start_supervised(
    name: str, loop: Callable[[], Awaitable[None]], failures: TaskFailures, ready: asyncio.Event
) -> asyncio.Task[None]:
    """Run ``loop`` supervised (as ``supervised`` with ``started=ready``) and return once it set ``ready``, e.g. a
    watch whose first replay is in; should it fail before that, its error is raised here."""
    task = asyncio.create_task(supervised(name, loop, failures, started=ready), name=name)
    waiting = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiting.cancel()
        task.result()
    return task


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (None: nothing to stop) and wait until it has ended; an error it ended with is raised.

    The cancel is repeated while the task runs on: on Python 3.11 ``asyncio.wait_for`` (nats-py awaits every
    request with it) swallows a cancellation that lands just as its inner future completes, and a loop that lost its
    cancel would keep a shutdown waiting for ever (a fresh-clone CI run saw a server hang on SIGTERM that way)."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_AGAIN_S)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """``stop_task`` for each of ``tasks`` at once; their errors are dropped (each was logged where it failed)."""
    await asyncio.gather(*(stop_task(task) for task in tasks), return_exceptions=True)


class Background:
    """One-shot tasks of a component: kept referenced until done; any that fails is counted, and logged with its
    traceback when it is the first failure since one of them last succeeded."""

    def __init__(self, name: str, failures: TaskFailures) -> None:
        self.name = name
        self.failures = failures
        self.tasks: set[asyncio.Task[None]] = set()
        self._streak = 0

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        problem = task.exception()
        if problem is None:
            self._streak = 0
            return
        self._streak += 1
        self.failures.record(self.name)
        if self._streak == 1:
            log.error("background task %s failed", self.name, exc_info=problem)
        else:
            log.debug("background task %s failed again (%d in a row): %r", self.name, self._streak, problem)

    async def cancel(self) -> None:
        await stop_tasks(list(self.tasks))
