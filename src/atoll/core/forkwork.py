"""Run numbered units of work on forked processes that share one queue.

For work made of many small system calls (a checkout: tens of thousands of
``link`` and ``mkdir``), where threads gain nothing because the interpreter
holds its lock between the calls, and where starting fresh interpreters
would cost more than the work (under emulation, seconds). ``git checkout``
uses worker processes for the same reason (``checkout.workers``).

:func:`fork_map` forks ``workers - 1`` children; they and the calling process
take unit numbers from one pipe, so a process that finishes early takes more
(put the largest units first). The pipe is filled and its write end closed
before the fork: a read of 4 bytes is atomic and returns 0 once all are
taken. A process whose unit raises takes the rest of the numbers out of the
pipe, so the others stop after their current unit.

What a child may do: system calls, pure Python, and the objects it inherited.
It must not write to the terminal: logging is off in a child (another thread
of the parent may have held the stream's lock at the fork; the error it
raises says what it found). It keeps only the descriptors the caller names
(``keep_fds``) and standard input, output and error: a pipe or socket that
another thread of the parent closes is closed for good, not held open by a
child. A child dies with the thread that forked it (``PR_SET_PDEATHSIG``) and
leaves by ``os._exit``, never through the caller's ``with`` blocks (a lock
released there would be the parent's). Python 3.12 and later warn
(``DeprecationWarning``) when a process with threads forks: the rules above
are what make it safe here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import struct
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from atoll.core.errors import AtollError, error_class
from atoll.core.run import kill_with_parent

__all__ = ["default_workers", "fork_map"]

log = logging.getLogger(__name__)

_UNIT = struct.Struct("=I")
MAX_WORKERS = 4  # processes beyond this only contend for the same directories' locks


def default_workers() -> int:
    """How many processes to use: the CPUs this process may run on, at most
    :data:`MAX_WORKERS`."""
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))


def fork_map(units: int, work: Callable[[int], None], result: Callable[[], Any], *,
             workers: int, keep_fds: Iterable[int] = ()) -> list[Any]:
    """Call ``work(i)`` for every ``i`` in ``range(units)``, each once, spread over this
    process and ``workers - 1`` forked children; then ``result()`` in each process.

    Args:
        units: how many units; take the largest first (a queue entry is one unit, or a
            run of consecutive units when there are more than the pipe holds).
        work: does unit ``i``; what it changes in memory stays in the process that ran
            it, so it reports through ``result``.
        result: what the process found, JSON-serialisable.
        workers: processes in all, this one included (1: no fork).
        keep_fds: descriptors ``work`` uses in a child; the child closes the others.

    Returns:
        The ``result()`` of each process, this process's first.

    Raises:
        Whatever ``work`` raised in this process; from a child, an :class:`AtollError`
        as its class (:func:`error_class`), an :class:`OSError` with its errno, strerror
        and file names, KeyboardInterrupt as itself, anything else as
        :class:`RuntimeError` naming it (its traceback logged at debug level). A child
        that died without a word (a signal) gives RuntimeError. When several processes
        fail, the first error read is raised.
    """
    workers = max(1, min(workers, units))
    queue_r, queue_w = os.pipe()
    children: dict[int, int] = {}  # pid -> read end of its result pipe
    try:
        with contextlib.suppress(OSError):  # a larger pipe where allowed: fewer runs
            fcntl.fcntl(queue_w, fcntl.F_SETPIPE_SZ, min(units * _UNIT.size, 1 << 20))
        slots = max(1, fcntl.fcntl(queue_w, fcntl.F_GETPIPE_SZ) // _UNIT.size)
        run = max(1, -(-units // slots))  # units per queue entry: filled before any fork
        os.write(queue_w, b"".join(_UNIT.pack(i) for i in range(0, units, run)))
        os.close(queue_w)
        queue_w = -1

        def take(first: int) -> None:
            for i in range(first, min(first + run, units)):
                work(i)

        keep = {0, 1, 2, queue_r, *keep_fds}
        parent = os.getpid()
        for _ in range(workers - 1):
            res_r, res_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover  (the child; its effects are tested)
                _child(parent, queue_r, res_w, keep | {res_w}, take, result)
            os.close(res_w)
            children[pid] = res_r
        try:
            _drain(queue_r, take)
        except BaseException:
            _empty(queue_r)
            raise
        results = [result()]
        error: BaseException | None = None
        while children:
            pid, res_r = next(iter(children.items()))
            data = _read_all(res_r)
            _, status = os.waitpid(pid, 0)
            del children[pid]
            os.close(res_r)
            out, exc = _decode(data, status)
            if exc is not None:
                error = error or exc
            else:
                results.append(out)
        if error is not None:
            raise error
        return results
    finally:
        if queue_w >= 0:
            os.close(queue_w)
        os.close(queue_r)
        for pid, res_r in children.items():  # left early: stop the others first
            try:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):  # reaped just before
                    os.waitpid(pid, 0)
            finally:
                os.close(res_r)


def _child(parent: int, queue_r: int, res_w: int, keep: set[int],
           take: Callable[[int], None], result: Callable[[], Any]) -> None:
    """The child's whole life; never returns."""
    code = 1
    try:
        kill_with_parent()
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)
        logging.disable(logging.CRITICAL)
        low = 0
        for fd in [*sorted(keep), os.sysconf("SC_OPEN_MAX")]:
            if low < fd:  # (closerange(n, n) would close everything: close_range(n, -1))
                os.closerange(low, fd)
            low = fd + 1
        try:
            _drain(queue_r, take)
            payload: dict[str, Any] = {"result": result()}
        except BaseException as exc:  # it crosses to the parent
            _empty(queue_r)
            payload = {"error": _encode(exc)}
        data = json.dumps(payload).encode()
        while data:
            data = data[os.write(res_w, data):]
        code = 0
    finally:
        os._exit(code)


def _drain(queue_r: int, take: Callable[[int], None]) -> None:
    while len(raw := os.read(queue_r, _UNIT.size)) == _UNIT.size:
        take(_UNIT.unpack(raw)[0])


def _empty(queue_r: int) -> None:
    """Take every number left, so the other processes stop after their unit."""
    with contextlib.suppress(OSError):
        while os.read(queue_r, 65536):
            pass


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _name(filename: object) -> str | None:
    if filename is None or isinstance(filename, str):
        return filename
    if isinstance(filename, bytes):
        return os.fsdecode(filename)
    return str(filename)


def _encode(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, AtollError):
        return {"atoll": type(exc).__name__, "brief": exc.brief, "details": exc.details,
                "resolution": exc.resolution}
    if isinstance(exc, OSError) and exc.errno is not None:
        return {"errno": exc.errno, "strerror": exc.strerror, "filename": _name(exc.filename),
                "filename2": _name(exc.filename2)}
    if isinstance(exc, KeyboardInterrupt):
        return {"interrupt": True}
    return {"other": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def _decode(data: bytes, status: int) -> tuple[Any, BaseException | None]:
    """(the child's result, None) or (None, the error it raised)."""
    try:
        payload = json.loads(data)
    except ValueError:
        how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit status {os.waitstatus_to_exitcode(status)}")
        return None, RuntimeError(f"a worker process ended without a result ({how})")
    if "result" in payload:
        return payload["result"], None
    err = payload["error"]
    if "atoll" in err:
        return None, error_class(err["atoll"])(err["brief"], details=err["details"],
                                               resolution=err["resolution"])
    if "errno" in err:
        return None, OSError(err["errno"], err["strerror"], err["filename"], None,
                             err["filename2"])
    if "interrupt" in err:
        return None, KeyboardInterrupt()
    log.debug("worker process failed:\n%s", err["traceback"])
    return None, RuntimeError(f"in a worker process: {err['other']}")
