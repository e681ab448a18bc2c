"""fork_map: every unit done once across real forked processes; errors cross intact."""

from __future__ import annotations

import errno
import os
import time

import pytest

from atoll.core.errors import CorruptObjectError
from atoll.core.forkwork import MAX_UNITS, fork_map


def test_every_unit_is_done_exactly_once_and_the_work_is_shared() -> None:
    done: list[int] = []

    def work(i: int) -> None:
        done.append(i)
        time.sleep(0.0005)

    results = fork_map(2000, work, lambda: {"pid": os.getpid(), "done": done}, workers=3)
    assert results[0]["pid"] == os.getpid()
    assert len({r["pid"] for r in results}) == 3  # two children reported
    every = [i for r in results for i in r["done"]]
    assert sorted(every) == list(range(2000))  # none twice, none left out


def test_one_worker_forks_nothing() -> None:
    results = fork_map(5, lambda i: None, lambda: os.getpid(), workers=1)
    assert results == [os.getpid()]


def test_an_atoll_error_in_a_child_crosses_with_its_class_and_words() -> None:
    parent = os.getpid()

    def work(i: int) -> None:
        if os.getpid() != parent:
            raise CorruptObjectError(f"unit {i} is damaged", details="d", resolution="r")
        time.sleep(0.002)

    with pytest.raises(CorruptObjectError) as info:
        fork_map(200, work, lambda: None, workers=2)
    assert info.value.brief.startswith("unit ")
    assert (info.value.details, info.value.resolution) == ("d", "r")


def test_an_os_error_in_a_child_keeps_its_errno_and_name() -> None:
    parent = os.getpid()

    def work(i: int) -> None:
        if os.getpid() != parent:
            os.mkdir("/proc/atoll-cannot-be-made")
        time.sleep(0.002)  # this process is slow: the child gets units

    with pytest.raises(OSError) as info:
        fork_map(200, work, lambda: None, workers=2)
    assert info.value.errno in (errno.ENOENT, errno.EACCES, errno.EPERM)
    assert info.value.filename == "/proc/atoll-cannot-be-made"


def test_a_child_that_dies_is_an_error_not_a_short_result() -> None:
    parent = os.getpid()

    def work(i: int) -> None:
        if os.getpid() != parent:
            os.kill(os.getpid(), 9)
        time.sleep(0.002)

    with pytest.raises(RuntimeError, match="signal 9"):
        fork_map(200, work, lambda: None, workers=2)


def test_an_error_here_stops_and_reaps_the_children() -> None:
    parent = os.getpid()

    def work(i: int) -> None:
        if os.getpid() == parent:
            raise ValueError("boom")
        os.sched_yield()

    with pytest.raises(ValueError, match="boom"):
        fork_map(500, work, lambda: None, workers=3)
    with pytest.raises(ChildProcessError):  # every child was reaped
        os.waitpid(-1, os.WNOHANG)


def test_too_many_units_is_refused() -> None:
    with pytest.raises(ValueError):
        fork_map(MAX_UNITS + 1, lambda i: None, lambda: None, workers=2)
