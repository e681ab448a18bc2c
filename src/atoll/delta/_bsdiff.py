"""bsdiff's control, diff and extra blocks, found with a divsufsort suffix array.

:func:`diff` returns exactly what ``bsdiff4.core.diff(base, content)`` returns
(the blocks :func:`bsdiff4.core.patch` applies on the host: control tuples
``(diff length, extra length, base seek)`` as three 8-byte little-endian
sign-magnitude integers each, bsdiff 4.x's ``offtout``; then the bytewise
differences; then the extra bytes), in about half the time and a third of the
memory. The matching is Colin Percival's bsdiff search in both; what differs is
how the base's suffix array is sorted: ``bsdiff4`` uses Larsson-Sadakane
qsufsort (two arrays of 8-byte integers), ``detools`` Yuta Mori's divsufsort
(one of 4-byte integers). A suffix array is unique for its input, so the blocks
are the same bytes (tests/unit/test_delta_bsdiff.py checks that against
``bsdiff4``). Source: https://github.com/eerimoq/detools (``bsdiff.c``,
``suffix_array.c``), http://www.daemonology.net/bsdiff/.

``detools`` is needed where deltas are generated (publishing), not on hosts,
which only apply: it is imported when :func:`diff` is first called. Its C code
holds the interpreter's lock while it works, so threads would take turns:
:class:`Workers` runs it in processes instead.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import TracebackType

from atoll.core.errors import AtollError

# detools' positions are int32_t: inputs stay far below this (static.BSDIFF_MAX).
MAX_INPUT = (1 << 31) - 1

_CTRL = struct.Struct("<QQQ")
_SIGN = 1 << 63


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
    ``content``, and the blocks. Raises ValueError for an input of 2 GiB or more.
    """
    from detools import bsdiff, suffix_array  # type: ignore[import-untyped]

    if len(base) > MAX_INPUT or len(content) > MAX_INPUT:
        raise ValueError("bsdiff: inputs of 2 GiB or more are not supported")
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
    """``n`` processes running :func:`diff`, for threads to call at once.

    The processes come from a fork server (a clean interpreter, not a fork of this
    process and its threads), are started at the first call, and end with the
    ``with`` block. Inputs and blocks travel through files in ``tmp`` and only
    their names through the pool's pipes: a pipe write that blocks on a large
    message never ends if the process that would read it is killed (CPython's
    ``ProcessPoolExecutor`` then hangs), a short one cannot block.
    """

    def __init__(self, n: int, tmp: Path):
        self._tmp = tmp
        self._pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("forkserver"))

    def diff(self, base: bytes, content: bytes) -> tuple[bytes, bytes, bytes]:
        """:func:`diff` in one of the processes.

        Raises:
            AtollError: the process died (killed, or out of memory).
        """
        with tempfile.TemporaryDirectory(dir=self._tmp, prefix="bsdiff-") as d:
            names = [os.path.join(d, n) for n in ("base", "new", "blocks")]
            Path(names[0]).write_bytes(base)
            Path(names[1]).write_bytes(content)
            try:
                a, b, _c = self._pool.submit(_diff_files, *names).result()
            except BrokenProcessPool as e:
                raise AtollError("bsdiff: a worker process died (killed, or out of memory?)",
                                 resolution="nothing was published; run the publish again"
                                 ) from e
            data = memoryview(Path(names[2]).read_bytes())
        return bytes(data[:a]), bytes(data[a:a + b]), bytes(data[a + b:])

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._pool.shutdown(cancel_futures=True)
