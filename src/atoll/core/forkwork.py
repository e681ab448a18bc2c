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
raises says what it found). A child dies with the thread that forked it
(``PR_SET_PDEATHSIG``) and leaves by ``os._exit``, never through the
caller's ``with`` blocks (a lock released there would be the parent's).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import struct
from collections.abc import Callable
from typing import Any

from atoll.core.errors import AtollError, error_class
from atoll.core.fsutil import LIBC

__all__ = ["default_workers", "fork_map"]

_UNIT = struct.Struct("=I")
MAX_UNITS = 16_000  # the numbers fit a pipe's default 64 KiB, written before any fork
MAX_WORKERS = 4  # processes beyond this only contend for the same directories' locks
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def default_workers() -> int:
    """How many processes to use: the CPUs this process may run on, at most
    :data:`MAX_WORKERS`."""
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))


def fork_map(units: int, work: Callable[[int], None], result: Callable[[], Any], *,
             workers: int) -> list[Any]:
    """Call ``work(i)`` for every ``i`` in ``range(units)``, each once, spread over this
    process and ``workers - 1`` forked children; then ``result()`` in each process.

    Args:
        units: how many units (at most :data:`MAX_UNITS`); take the largest first.
        work: does unit ``i``; what it changes in memory stays in the process that ran
            it, so it reports through ``result``.
        result: what the process found, JSON-serialisable.
        workers: processes in all, this one included (1: no fork).

    Returns:
        The ``result()`` of each process, this process's first.

    Raises:
        Whatever ``work`` raised in this process; from a child, an :class:`AtollError`
        as its class (:func:`error_class`), an :class:`OSError` with its errno, strerror
        and filename, anything else as :class:`RuntimeError` naming it. A child that
        died without a word (a signal) gives RuntimeError.
    """
    if not 0 <= units <= MAX_UNITS:
        raise ValueError(f"{units} units: at most {MAX_UNITS}")
    workers = max(1, min(workers, units))
    queue_r, queue_w = os.pipe()
    children: dict[int, int] = {}  # pid -> read end of its result pipe
    try:
        os.write(queue_w, b"".join(_UNIT.pack(i) for i in range(units)))
        os.close(queue_w)
        queue_w = -1
        for _ in range(workers - 1):
            res_r, res_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover  (the child; its effects are tested)
                _child(queue_r, res_w, res_r, work, result)
            os.close(res_w)
            children[pid] = res_r
        try:
            _drain(queue_r, work)
        except BaseException:
            _empty(queue_r)
            raise
        results = [result()]
        error: BaseException | None = None
        for pid, res_r in list(children.items()):
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
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(res_r)


def _child(queue_r: int, res_w: int, res_r: int, work: Callable[[int], None],
           result: Callable[[], Any]) -> None:
    """The child's whole life; never returns."""
    code = 1
    try:
        os.close(res_r)
        parent = os.getppid()
        LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)
        logging.disable(logging.CRITICAL)
        try:
            _drain(queue_r, work)
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


def _drain(queue_r: int, work: Callable[[int], None]) -> None:
    while len(raw := os.read(queue_r, _UNIT.size)) == _UNIT.size:
        work(_UNIT.unpack(raw)[0])


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


def _encode(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, AtollError):
        return {"atoll": type(exc).__name__, "brief": exc.brief, "details": exc.details,
                "resolution": exc.resolution}
    if isinstance(exc, OSError) and exc.errno is not None:
        filename = exc.filename if isinstance(exc.filename, str | None) else os.fsdecode(
            exc.filename)
        return {"errno": exc.errno, "strerror": exc.strerror, "filename": filename}
    return {"other": f"{type(exc).__name__}: {exc}"}


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
        return None, OSError(err["errno"], err["strerror"], err["filename"])
    return None, RuntimeError(f"in a worker process: {err['other']}")
