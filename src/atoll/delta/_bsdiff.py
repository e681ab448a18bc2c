"""bsdiff's control, diff and extra blocks, found with a divsufsort suffix array.

:func:`diff` returns exactly what ``bsdiff4.core.diff(base, content)`` returns
(the blocks :func:`bsdiff4.core.patch` applies on the host: control tuples
``(diff length, extra length, base seek)`` as three 8-byte little-endian
sign-magnitude integers each, bsdiff 4.x's ``offtout``; then the bytewise
differences; then the extra bytes). The matching is Colin Percival's bsdiff
search in both; what differs is how the base's suffix array is sorted:
``bsdiff4`` uses Larsson-Sadakane qsufsort (two arrays of 8-byte integers),
``detools`` Yuta Mori's divsufsort (one of 4-byte integers). A suffix array is
unique for its input, so the blocks are the same bytes
(tests/unit/test_delta_bsdiff.py checks that against ``bsdiff4``). On changed
kernel modules and binaries this takes 0.25-0.6x of ``bsdiff4``'s time and about
0.4x of its memory; on unrelated files it can be slower (up to 1.3x measured).
Source: https://github.com/eerimoq/detools (``bsdiff.c``, ``suffix_array.c``),
http://www.daemonology.net/bsdiff/.

``detools`` is needed where deltas are generated (publishing), not on hosts,
which only apply: it is imported by :func:`diff` (:func:`require` checks it is
there). Its C code holds the interpreter's lock while it works, so threads would
take turns: :class:`Workers` runs it in worker processes instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

from atoll.core.errors import AtollError, InputError
from atoll.core.run import kill_with_parent, spawn
from atoll.store.repo import locked_dir

# detools' positions and scores are int32_t (``s * 2`` among them): inputs stay
# far below this (static.BSDIFF_MAX).
MAX_INPUT = 1 << 30

_CTRL = struct.Struct("<QQQ")
_SIGN = 1 << 63


def require() -> None:
    """Raise InputError if detools, which :func:`diff` needs, is not installed, or if
    the installed one does not make ``bsdiff4``'s blocks (its chunks are read by
    position: a release that changed them must not make deltas)."""
    if importlib.util.find_spec("detools") is None:
        raise InputError("detools is not installed: publishing deltas needs it (bsdiff)",
                         resolution="run scripts/bootstrap.sh, or pip install 'detools>=0.53' "
                         "(a source package: it needs gcc and g++)")
    import bsdiff4.core  # type: ignore[import-untyped]

    # a move backwards (a negative seek), a changed byte, new bytes
    base = bytes(range(256)) * 8
    content = base[1024:1536] + base[:1024] + b"new bytes" + base[1536:1800] + b"\x00" + base[1801:]
    if diff(base, content) != tuple(bsdiff4.core.diff(base, content)):
        from importlib.metadata import version

        raise InputError(f"detools {version('detools')} does not make bsdiff4's blocks",
                         resolution="install the release atoll was tested with: "
                         "pip install 'detools==0.53.0'")


def _int(data: bytes) -> int:
    """One of detools' sizes: 6 bits then 7 per byte, little end first; 0x80 says
    another byte follows, 0x40 of the first byte that the value is negative."""
    value, shift = data[0] & 0x3F, 6
    for b in data[1:]:
        value |= (b & 0x7F) << shift
        shift += 7
    return -value if data[0] & 0x40 else value


def _offt(n: int) -> int:
    return n if n >= 0 else (-n) | _SIGN


def diff(base: bytes, content: bytes) -> tuple[bytes, bytes, bytes]:
    """``(control, diff, extra)`` turning ``base`` into ``content``, as
    ``bsdiff4.core.diff`` makes them.

    Memory: the suffix array (4 bytes per byte of ``base``), a buffer the size of
    ``content``, and the blocks (about twice ``content`` while they are joined).
    Raises ValueError for an input of 1 GiB or more.
    """
    from detools import bsdiff, suffix_array  # type: ignore[import-untyped]

    if len(base) >= MAX_INPUT or len(content) >= MAX_INPUT:
        raise ValueError("bsdiff: inputs of 1 GiB or more are not supported")
    sa = bytearray(4 * (len(base) + 1))
    suffix_array.divsufsort(base, sa)
    chunks = bsdiff.create_patch(sa, base, content, bytearray(len(content) + 1))
    del sa
    # chunks: per step, [size, diff bytes, size, extra bytes, base seek]
    ctrl = bytearray()
    for i in range(0, len(chunks), 5):
        ctrl += _CTRL.pack(len(chunks[i + 1]), len(chunks[i + 3]), _offt(_int(chunks[i + 4])))
    return bytes(ctrl), b"".join(chunks[1::5]), b"".join(chunks[3::5])


def _diff_files(base: str, content: str, out: str) -> tuple[int, int, int]:
    """:func:`diff` of two files, its blocks written one after the other to ``out``:
    their lengths."""
    blocks = diff(Path(base).read_bytes(), Path(content).read_bytes())
    with open(out, "wb") as fh:
        for b in blocks:
            fh.write(b)
    return len(blocks[0]), len(blocks[1]), len(blocks[2])


class Workers:
    """``n`` worker processes running :func:`diff`, for threads to call at once.

    Each is ``python -P -c WORKER PID``, started when the ``with`` block
    is entered and ended when it is left (at once if it is left by an error). A
    request is a JSON line naming three files (base, new, where to write the
    blocks), the answer a line ``ok LEN LEN LEN`` or ``error MESSAGE``: the data
    travels through files in a locked directory of ``tmp``, only names through
    the pipes. A worker ignores SIGINT (the ``with`` block ends it) and dies with
    the thread that entered the block (``PR_SET_PDEATHSIG``), so nothing is left
    running when atoll is interrupted or killed.
    """

    def __init__(self, n: int, tmp: Path):
        self._n, self._tmp = n, tmp
        self._stack = contextlib.ExitStack()
        self._idle: queue.SimpleQueue[subprocess.Popen[bytes]] = queue.SimpleQueue()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._dead: tuple[str, str] | None = None  # what ended a worker, its stderr
        self._closed = False

    def __enter__(self) -> Workers:
        require()
        self._dir = self._stack.enter_context(locked_dir(self._tmp, "bsdiff-"))
        try:
            path = os.pathsep.join(p for p in sys.path if p)
            for i in range(self._n):
                with open(self._dir / f"stderr-{i}", "wb") as err:
                    # -P: not the current directory first on sys.path (a queue.py there
                    # would run)
                    p = spawn([sys.executable, "-P", "-c", WORKER, str(os.getpid())],
                              env={"PYTHONPATH": path}, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=err)
                self._procs.append(p)
                self._idle.put(p)
        except BaseException:
            self._end(kill=True)
            raise
        return self

    def diff(self, base: bytes, content: bytes) -> tuple[bytes, bytes, bytes]:
        """:func:`diff` in one of the processes.

        Raises:
            AtollError: a process died (killed, or out of memory: then every later
                call raises too), or :func:`diff` failed there.
        """
        proc = self._idle.get()
        try:
            if self._dead is not None:
                raise self._died()
            if self._closed:
                raise AtollError("bsdiff: the workers have ended")
            d = tempfile.mkdtemp(dir=self._dir)
            try:
                names = [os.path.join(d, n) for n in ("base", "new", "blocks")]
                Path(names[0]).write_bytes(base)
                Path(names[1]).write_bytes(content)
                answer = self._ask(proc, names)
                if answer[0] == "error":
                    raise AtollError(f"bsdiff failed: {' '.join(answer[1:])}")
                a, b = int(answer[1]), int(answer[2])
                data = memoryview(Path(names[2]).read_bytes())
            finally:
                shutil.rmtree(d, ignore_errors=True)
            return bytes(data[:a]), bytes(data[a:a + b]), bytes(data[a + b:])
        finally:
            self._idle.put(proc)

    def _ask(self, proc: subprocess.Popen[bytes], names: list[str]) -> list[str]:
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(json.dumps(names).encode() + b"\n")
            stdin.flush()
            line = stdout.readline()
        except (BrokenPipeError, ValueError):  # ValueError: closed by _end
            line = b""
        if not line.endswith(b"\n"):
            try:
                code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            err = b""
            with contextlib.suppress(OSError):
                err = (self._dir / f"stderr-{self._procs.index(proc)}").read_bytes()[-4096:]
            how = (f"signal {-code}: killed, or out of memory?" if code < 0
                   else f"exit code {code}")
            if self._dead is None:  # the first one
                self._dead = (how, err.decode("utf-8", "replace"))
            raise self._died()
        return line.decode().split()

    def _died(self) -> AtollError:
        assert self._dead is not None
        how, err = self._dead
        oom = ("If the kernel log shows the OOM killer, free memory on this machine (each "
               "worker holds about 5x the largest file it diffs) and publish again."
               if "signal" in how else "Its error output is above.")
        return AtollError(f"bsdiff: a worker process died ({how})", details=err or None,
                          resolution=f"nothing was published. {oom}")

    def _end(self, kill: bool) -> None:
        self._closed = True
        for p in self._procs:
            with contextlib.suppress(OSError):
                p.stdin.close()  # type: ignore[union-attr]
            if kill:
                p.kill()
        for p in self._procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            with contextlib.suppress(OSError):
                p.stdout.close()  # type: ignore[union-attr]
        self._stack.close()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._end(kill=t is not None)


def _worker(parent: int) -> int:
    """A worker process (see :class:`Workers`): it dies with ``parent`` and ignores ^C."""
    kill_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() != parent:  # it ended before the line above
        return 1
    _serve(sys.stdin.buffer, sys.stdout.buffer)
    return 0


def _serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """Answer each request line (see :class:`Workers`) until end of file."""
    for line in requests:
        try:
            answer = "ok " + " ".join(map(str, _diff_files(*json.loads(line))))
        except MemoryError:
            answer = "error out of memory"
        except Exception as e:  # told to the caller, which raises it
            answer = f"error {type(e).__name__}: {e}".replace("\n", " ")
        answers.write(answer.encode() + b"\n")
        answers.flush()


# A worker's program (``python -c WORKER PID``; not ``-m``: the package imports this
# module before ``-m`` would run it again as ``__main__``).
WORKER = ("import sys\n"
          "from atoll.delta._bsdiff import _worker\n"
          "sys.exit(_worker(int(sys.argv[1])))\n")
