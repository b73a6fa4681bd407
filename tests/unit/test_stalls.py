"""The leader's stall periods: only the part of a stall inside a worker's silence is taken off that silence."""

from __future__ import annotations

import pytest

from gyoza.scheduler.stalls import Stalls


def test_without_stalls_nothing_is_taken_off() -> None:
    assert Stalls(keep_s=100).between(0, 50) == 0


def test_only_the_overlap_with_the_silence_counts() -> None:
    stalls = Stalls(keep_s=100)
    stalls.add(10, 13)
    stalls.add(20, 21)
    assert stalls.between(0, 30) == pytest.approx(4)
    assert stalls.between(12, 30) == pytest.approx(2), "a silence that began inside a stall"
    assert stalls.between(14, 30) == pytest.approx(1)
    assert stalls.between(22, 30) == 0, "stalls before the last heartbeat do not count"
    assert stalls.between(11, 12) == pytest.approx(1), "a stall still open at the end of the window"


def test_overlapping_periods_are_counted_once() -> None:
    stalls = Stalls(keep_s=100)
    stalls.add(10, 15)
    stalls.add(12, 16)  # reported late: only 15-16 is new
    stalls.add(14, 15)  # nothing new
    assert stalls.between(0, 20) == pytest.approx(6)


def test_old_periods_are_forgotten_without_changing_recent_sums() -> None:
    stalls = Stalls(keep_s=10)
    stalls.add(1, 3)
    stalls.add(20, 22)
    stalls.add(25, 26)
    assert stalls.between(19, 30) == pytest.approx(3)
    assert stalls.between(21, 30) == pytest.approx(2)
    assert stalls.between(0, 30) == pytest.approx(3), "the forgotten 1-3 no longer counts"


def test_clear_forgets_everything() -> None:
    stalls = Stalls(keep_s=100)
    stalls.add(1, 5)
    stalls.clear()
    assert stalls.between(0, 10) == 0
