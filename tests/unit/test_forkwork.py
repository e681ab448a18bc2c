"""fork_map: every unit done once across real forked processes; errors cross intact."""

from __future__ import annotations

import errno
import os
import time

import pytest

from atoll.core.errors import CorruptObjectError
from atoll.core.forkwork import fork_map


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


def test_an_os_error_keeps_both_names() -> None:
    parent = os.getpid()

    def work(i: int) -> None:
        if os.getpid() != parent:
            os.link("/nonexistent/atoll-a", "/nonexistent/atoll-b")
        time.sleep(0.002)

    with pytest.raises(FileNotFoundError) as info:
        fork_map(200, work, lambda: None, workers=2)
    assert (info.value.filename, info.value.filename2) == ("/nonexistent/atoll-a",
                                                           "/nonexistent/atoll-b")


def test_a_child_that_dies_is_an_error_not_a_short_result() -> None:
    parent = os.getpid()

    def work(i: int) -> None:
        if os.getpid() != parent:
            os.kill(os.getpid(), 9)
        time.sleep(0.002)

    with pytest.raises(RuntimeError, match="signal 9"):
        fork_map(200, work, lambda: None, workers=2)


def test_an_error_here_stops_and_reaps_the_children(forks: list[int]) -> None:
    parent = os.getpid()

    def work(i: int) -> None:
        if os.getpid() == parent:
            raise ValueError("boom")
        time.sleep(0.05)  # the children must not take every unit before the parent's first

    with pytest.raises(ValueError, match="boom"):
        fork_map(500, work, lambda: None, workers=3)
    assert len(forks) == 2
    for pid in forks:  # each was reaped (this process may have other children: a test
        with pytest.raises(ChildProcessError):  # suite's daemons)
            os.waitpid(pid, os.WNOHANG)


def test_more_units_than_the_pipe_holds_are_taken_in_runs() -> None:
    """300,000 numbers do not fit a 1 MiB pipe: queue entries stand for runs of units,
    and still every unit is done once."""
    done: list[int] = []
    results = fork_map(300_000, done.append, lambda: done, workers=2)
    every = sorted(i for r in results for i in r)
    assert every == list(range(300_000))


def test_no_units() -> None:
    assert fork_map(0, lambda i: None, lambda: "r", workers=3) == ["r"]


def test_a_child_keeps_only_the_descriptors_it_is_given() -> None:
    """A pipe this process closes is closed: no child holds its other end open."""
    kept_r, kept_w = os.pipe()
    other_r, other_w = os.pipe()
    parent = os.getpid()

    def work(i: int) -> None:
        if os.getpid() != parent and i < 50:
            os.write(kept_w, b"k")  # the descriptor it was given works
        time.sleep(0.002)

    def result() -> list[bool]:
        alive = []
        for fd in (other_r, other_w):
            try:
                os.fstat(fd)
                alive.append(True)
            except OSError:
                alive.append(False)
        return alive

    try:
        results = fork_map(200, work, result, workers=2, keep_fds=[kept_w])
        assert results[0] == [True, True]
        assert results[1] == [False, False]  # closed in the child
        os.close(kept_w)
        assert b"k" in os.read(kept_r, 1024)
    finally:
        for fd in (kept_r, other_r, other_w):
            os.close(fd)


def test_an_interrupt_in_a_child_is_an_interrupt_here() -> None:
    parent = os.getpid()

    def work(i: int) -> None:
        if os.getpid() != parent:
            raise KeyboardInterrupt
        time.sleep(0.002)

    with pytest.raises(KeyboardInterrupt):
        fork_map(200, work, lambda: None, workers=2)
