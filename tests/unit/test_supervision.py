"""Supervised background tasks: a failed (or ended) loop is restarted after a bounded back-off, its failure logged
once per streak and counted; one-shot tasks are counted and logged the same way; cancellation is not a failure."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gyoza.supervision import Background, TaskFailures, restart_delay, stop_task, supervised

FAST = {"first": 0.001, "cap": 0.004}


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gyoza.supervision" and r.levelno >= logging.ERROR]


def test_restart_delay_doubles_up_to_the_cap() -> None:
    assert [restart_delay(n, first=0.1, cap=1.0) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert restart_delay(10_000, first=0.1, cap=1.0) == 1.0


async def test_a_failing_loop_is_restarted_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    failures = TaskFailures()
    runs = 0
    steady = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise RuntimeError(f"boom {runs}")
        steady.set()
        await asyncio.Event().wait()  # healthy from now on

    task = asyncio.create_task(supervised("flaky", loop, failures, **FAST))
    await asyncio.wait_for(steady.wait(), 5)
    assert failures.counts == {"flaky": 3}
    assert errors_logged(caplog) == ["background task flaky failed; restarting it"], "once per streak"
    await stop_task(task)
    assert task.cancelled() and failures.counts == {"flaky": 3}, "cancellation is not a failure"


async def test_a_loop_that_ends_is_restarted() -> None:
    failures = TaskFailures()
    runs = 0
    again = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            again.set()

    task = asyncio.create_task(supervised("ends", loop, failures, **FAST))
    await asyncio.wait_for(again.wait(), 5)
    await stop_task(task)
    assert failures.counts["ends"] >= 1


async def test_a_failure_before_start_up_completes_propagates() -> None:
    failures = TaskFailures()

    async def loop() -> None:
        raise ValueError("cannot even start")

    with pytest.raises(ValueError, match="cannot even start"):
        await supervised("starting", loop, failures, started=asyncio.Event(), **FAST)
    assert failures.counts == {}


async def test_a_failure_after_start_up_is_restarted() -> None:
    failures = TaskFailures()
    started = asyncio.Event()
    runs = 0
    second = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        started.set()
        if runs == 1:
            raise ValueError("lost the watch")
        second.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervised("watch", loop, failures, started=started, **FAST))
    await asyncio.wait_for(second.wait(), 5)
    await stop_task(task)
    assert failures.counts == {"watch": 1}


async def test_background_counts_failed_one_shots_and_logs_once_per_streak(caplog: pytest.LogCaptureFixture) -> None:
    failures = TaskFailures()
    background = Background("one-shots", failures)

    async def fail() -> None:
        raise RuntimeError("write refused")

    async def succeed() -> None:
        pass

    for work in (fail, fail, succeed, fail):
        await asyncio.gather(background.spawn(work()), return_exceptions=True)
        await asyncio.sleep(0)  # let the done callback run
    assert failures.counts == {"one-shots": 3}
    assert errors_logged(caplog) == ["background task one-shots failed"] * 2, "again only after a success"
    assert not background.tasks


async def test_background_cancel_ends_every_task() -> None:
    background = Background("waiters", TaskFailures())

    async def wait_forever() -> None:
        await asyncio.Event().wait()

    tasks = [background.spawn(wait_forever()) for _ in range(3)]
    await background.cancel()
    assert all(task.cancelled() for task in tasks) and background.failures.counts == {}


async def test_stop_task_ends_a_loop_whose_cancel_was_swallowed() -> None:
    """On Python 3.11 ``asyncio.wait_for`` (nats-py awaits every request with it) returns its inner result, and drops
    the cancellation, when the cancel lands as that result arrives; the loop then runs on. A stop must still end."""
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    answers: list[int] = []

    async def requests_forever() -> None:
        while True:
            answers.append(await asyncio.wait_for(answer if not answer.done() else asyncio.sleep(0, 1), 10))
            await asyncio.sleep(30)

    task = asyncio.create_task(requests_forever())
    await asyncio.sleep(0.01)
    answer.set_result(1)
    stopping = asyncio.create_task(stop_task(task))  # its first cancel lands with the answer
    await asyncio.wait({stopping}, timeout=5)
    stopped = stopping.done()
    task.cancel()  # ends it for good (a second cancel) should the stop have hung
    assert stopped, "the stop hung on a cancel the task lost"
    assert task.cancelled()
    assert answers == [1]


async def test_stop_task_raises_what_the_task_failed_with() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="boom"):
        await stop_task(task)
