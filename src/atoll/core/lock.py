"""Locks between atoll processes: one writer at a time on a sysroot, gc alone on a store.

Two locks, both ``flock(2)`` on a file (released by the kernel when the
process dies, however it dies, so a killed command never leaves a stale lock):

``<sysroot>/atoll/lock``
    exclusive, around every change to deployments and the boot pointer
    (deploy, stage, finalize, rollback, pin, undeploy, cleanup, init).
``<repo>/lock``
    shared by every writer of a repository (commit, compose, pull/import,
    deploy's import and checkout, ref changes, quarantine) and taken
    exclusively by ``store gc``. A repository outside a sysroot (``--repo``)
    has its own.

Order: the sysroot lock before the repository lock, never the other way
round (gc takes only the repository lock), so two commands cannot deadlock.

A command that finds a lock taken waits, saying once on stderr for whom
(the holder's pid and command line, read from ``/proc/locks``), for at most
:func:`wait_seconds` (default :data:`DEFAULT_WAIT`; ``--lock-timeout``,
``--no-wait`` or ``ATOLL_LOCK_TIMEOUT`` change it), then fails with
:class:`~atoll.core.errors.BusyError`.

Within one process a lock is reentrant for the thread that holds it and
excludes other threads (atolld's API thread and its loop); a thread holding
the shared lock cannot upgrade it to exclusive (a programming error).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from atoll.core.errors import BusyError, InputError

__all__ = ["DEFAULT_WAIT", "FileLock", "holders", "parse_seconds", "set_wait", "wait_seconds"]

log = logging.getLogger("atoll.lock")

DEFAULT_WAIT = 1800.0  # seconds: longer than any deploy or gc on a real host
_POLL = 0.1

_wait: float | None = None


def set_wait(seconds: float | None) -> None:
    """How long lock waits last in this process (0: fail at once; None: the default)."""
    global _wait
    _wait = seconds


def parse_seconds(text: str, what: str) -> float:
    """A wait in seconds: a finite number >= 0 (capped at what threads can wait).

    Raises:
        InputError: not such a number.
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{what} {text!r} is not a number of seconds (0 or more)",
                         resolution="e.g. --lock-timeout 60; --no-wait for 0")
    return min(value, threading.TIMEOUT_MAX)


def wait_seconds() -> float:
    """The wait in force: :func:`set_wait`, else ``ATOLL_LOCK_TIMEOUT``, else the default.

    Raises:
        InputError: ``ATOLL_LOCK_TIMEOUT`` is not a number of seconds.
    """
    if _wait is not None:
        return _wait
    env = os.environ.get("ATOLL_LOCK_TIMEOUT")
    if env:
        return parse_seconds(env, "ATOLL_LOCK_TIMEOUT")
    return DEFAULT_WAIT


@dataclass
class _Held:
    """This process's hold on one lock file."""

    mutex: threading.RLock = field(default_factory=threading.RLock)
    fd: int | None = None
    mode: int = 0  # fcntl.LOCK_SH or LOCK_EX while held
    depth: int = 0


_registry: dict[str, _Held] = {}
_registry_mutex = threading.Lock()


def holders(path: Path) -> list[str]:
    """Who holds a flock on ``path``: ``pid N (command line)`` per holder, from /proc/locks."""
    try:
        st = os.stat(path)
        text = Path("/proc/locks").read_text()
    except OSError:
        return []
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    out = []
    for line in text.splitlines():
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue  # waiters are marked "->"
        pid, where = fields[4], fields[5]
        try:
            major, minor, ino = where.split(":")
            if (int(major, 16), int(minor, 16), int(ino)) != want:
                continue
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
        except (ValueError, OSError):
            cmd = b""
            if not pid.isdigit():
                continue
        text_cmd = cmd.decode(errors="replace")
        if len(text_cmd) > 120:
            text_cmd = text_cmd[:117] + "..."
        out.append(f"pid {pid}" + (f" ({text_cmd})" if text_cmd else ""))
    return sorted(set(out))


class FileLock:
    """A shared/exclusive lock on the file ``path`` (created 0600 when missing).

    ``what`` names it in messages ("the sysroot /", "repository /srv/repo").
    """

    def __init__(self, path: Path, what: str):
        self.path = Path(path)
        self.what = what

    def _held(self) -> _Held:
        key = os.path.realpath(self.path)
        with _registry_mutex:
            return _registry.setdefault(key, _Held())

    @contextlib.contextmanager
    def shared(self, *, wait: float | None = None) -> Iterator[None]:
        """Hold the lock shared (writers of a repository)."""
        with self._hold(fcntl.LOCK_SH, wait):
            yield

    @contextlib.contextmanager
    def exclusive(self, *, wait: float | None = None) -> Iterator[None]:
        """Hold the lock exclusively.

        Raises:
            BusyError: another process held it for longer than the wait.
        """
        with self._hold(fcntl.LOCK_EX, wait):
            yield

    @contextlib.contextmanager
    def _hold(self, mode: int, wait: float | None) -> Iterator[None]:
        held = self._held()
        limit = wait_seconds() if wait is None else wait
        if not held.mutex.acquire(timeout=limit if limit > 0 else 0.001):
            raise self._busy(limit)
        try:
            if held.depth:
                if mode == fcntl.LOCK_EX and held.mode == fcntl.LOCK_SH:
                    raise RuntimeError(f"{self.what}: cannot upgrade a shared lock")
                held.depth += 1
                try:
                    yield
                finally:
                    held.depth -= 1
                return
            held.fd = self._acquire(mode, limit)
            held.mode, held.depth = mode, 1
            try:
                yield
            finally:
                held.depth = 0
                fd, held.fd = held.fd, None
                if fd is not None:
                    os.close(fd)  # releases the flock
        finally:
            held.mutex.release()

    def _acquire(self, mode: int, limit: float) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + limit
            told = False
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    pass
                if time.monotonic() >= deadline:
                    raise self._busy(limit)
                if not told:
                    who = holders(self.path)
                    log.warning("waiting for the lock on %s, held by %s (up to %s; "
                                "--no-wait fails at once)", self.what,
                                ", ".join(who) or "another atoll command", _human(limit))
                    told = True
                time.sleep(_POLL)
        except BaseException:
            os.close(fd)
            raise

    def _busy(self, limit: float) -> BusyError:
        who = holders(self.path)
        return BusyError(
            f"{self.what} is locked by another atoll command"
            + (f": {', '.join(who)}" if who else ""),
            details=f"lock file: {self.path}; waited {_human(limit)}",
            resolution="wait for it to finish and run the command again "
            "(--lock-timeout SECONDS waits longer)")


def _human(seconds: float) -> str:
    if seconds <= 0:
        return "not at all"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 2 * 86400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 86400:.0f} days"
