"""Byte streams in bounded memory, for importing deltas and packs (internal).

A host imports objects of any size (a 128 MB decompressed initrd, a 66 MB
kernel) while holding only a few pieces of each: content flows from the
downloaded file through a decompressor into :meth:`Repo.import_file_stream`,
which hashes and writes it piece by piece. Every helper here says what it
holds at most; none holds a whole object.

* :func:`read_pieces` -- exactly N bytes of a reader, piece by piece;
* :func:`file_pieces` -- a range of a file, piece by piece;
* :class:`Cursor` -- take N bytes, then the next M, from one stream of pieces;
* :func:`gunzip_pieces`, :func:`xz_expanded_pieces` -- decompressed views of a
  stored file, streamed;
* :func:`bspatch_pieces` -- bsdiff's patch, applied in bounded batches.
"""

from __future__ import annotations

import lzma
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

import bsdiff4.core  # type: ignore[import-untyped]

from atoll.core.errors import CorruptObjectError

__all__ = [
    "PIECE",
    "Cursor",
    "Limited",
    "Reader",
    "bspatch_pieces",
    "drain",
    "file_pieces",
    "gunzip_pieces",
    "read_pieces",
    "xz_expanded_pieces",
]

PIECE = 1 << 20  # bytes handed on at a time


class Reader(Protocol):
    """Anything with ``read(n)``: a file, a zstd stream reader, :class:`Limited`."""

    def read(self, n: int = -1, /) -> bytes: ...
XZ_MAGIC = b"\xfd7zXZ\x00"


def read_pieces(reader: Reader, n: int, piece: int = PIECE) -> Iterator[bytes]:
    """Exactly ``n`` bytes of ``reader``, in pieces of at most ``piece`` bytes.

    Raises:
        CorruptObjectError: the stream ends first.
    """
    left = n
    while left:
        data = reader.read(min(left, piece))
        if not data:
            raise CorruptObjectError(f"stream ends early: {left} of {n} bytes missing")
        left -= len(data)
        yield data


def drain(pieces: Iterator[bytes]) -> None:
    """Read what is left of ``pieces`` (keeps a shared stream in step)."""
    for _ in pieces:
        pass


def file_pieces(path: Path | str, offset: int = 0, n: int | None = None,
                piece: int = PIECE) -> Iterator[bytes]:
    """``n`` bytes (None: to the end) of a file from ``offset``, in pieces.

    Raises:
        CorruptObjectError: the file is shorter than ``offset + n``.
        OSError: it cannot be read.
    """
    with open(path, "rb") as fh:
        fh.seek(offset)
        if n is None:
            while data := fh.read(piece):
                yield data
        else:
            yield from read_pieces(fh, n, piece)


class Limited:
    """At most ``n`` bytes of a reader (a block inside a longer stream): reads past
    them see the end. Holds nothing."""

    def __init__(self, reader: Reader, n: int):
        self._reader = reader
        self.left = n

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        if not n:
            return b""
        out = bytearray()
        while len(out) < n:
            data = self._reader.read(n - len(out))
            if not data:
                break
            out += data
        self.left -= len(out)
        return bytes(out)


class Cursor:
    """Consecutive parts of one stream of pieces: :meth:`take` N bytes, then the
    next M, then :meth:`rest`. Holds at most one piece."""

    def __init__(self, pieces: Iterable[bytes]):
        self._it = iter(pieces)
        self._head: bytes | memoryview = b""

    def take(self, n: int) -> Iterator[bytes | memoryview]:
        """The next ``n`` bytes (read them all before the next call).

        Raises:
            CorruptObjectError: the stream ends first.
        """
        left = n
        while left:
            if not self._head:
                self._head = next(self._it, b"")
                if not self._head:
                    raise CorruptObjectError(f"stream ends early: {left} of {n} bytes missing")
            if len(self._head) <= left:
                part, self._head = self._head, b""
            else:
                view = memoryview(self._head)
                part, self._head = view[:left], view[left:]
            left -= len(part)
            yield part
            del part  # not held while the next piece is made

    def rest(self) -> Iterator[bytes | memoryview]:
        """Everything after what was taken."""
        if self._head:
            head, self._head = self._head, b""
            yield head
        yield from self._it


def gunzip_pieces(pieces: Iterable[bytes], piece: int = PIECE) -> Iterator[bytes]:
    """The decompressed content of a gzip stream (all its members; zero padding
    between or after them is skipped, as gzip does), in pieces of at most
    ``piece`` bytes.

    Raises:
        CorruptObjectError: not gzip, or cut short.
    """
    dec: zlib._Decompress | None = None  # None: between members
    try:
        for data in pieces:
            while data:
                if dec is None:
                    data = data.lstrip(b"\0")
                    if not data:
                        break
                    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out = dec.decompress(data, piece)
                if out:
                    yield out
                data = dec.unconsumed_tail
                while not data and not dec.eof and (out := dec.decompress(b"", piece)):
                    yield out
                if dec.eof:
                    data, dec = dec.unused_data, None
    except zlib.error as exc:
        raise CorruptObjectError(f"not a gzip stream: {exc}") from exc
    if dec is not None:
        raise CorruptObjectError("the gzip stream is cut short")


def xz_expanded_pieces(path: Path | str, offset: int, piece: int = PIECE) -> Iterator[bytes]:
    """A file with an xz stream at ``offset``, the stream decompressed: the bytes
    before it, its content, the bytes after it (a ``vmlinuz`` with its kernel
    unpacked), in pieces of at most ``piece`` bytes.

    Raises:
        CorruptObjectError: no whole xz stream at ``offset``.
    """
    with open(path, "rb") as fh:
        yield from read_pieces(fh, offset, piece)
        if fh.read(len(XZ_MAGIC)) != XZ_MAGIC:
            raise CorruptObjectError(f"{path}: no xz stream at byte {offset}")
        fh.seek(offset)
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            while not dec.eof:
                if dec.needs_input:
                    data = fh.read(piece)
                    if not data:
                        raise CorruptObjectError(f"{path}: the xz stream is cut short")
                else:
                    data = b""
                out = dec.decompress(data, piece)
                if out:
                    yield out
        except lzma.LZMAError as exc:
            raise CorruptObjectError(f"{path}: bad xz stream: {exc}") from exc
        if dec.unused_data:
            yield dec.unused_data
        while data := fh.read(piece):
            yield data


# -- bsdiff ------------------------------------------------------------------

_TRIPLE = struct.Struct("<8s8s8s")
_SIGN = 1 << 63


def _offtin(raw: bytes) -> int:
    """bsdiff's 8-byte sign-magnitude integer."""
    x = int.from_bytes(raw, "little")
    return -(x & (_SIGN - 1)) if x & _SIGN else x


def _offtout(x: int) -> bytes:
    return (-x | _SIGN if x < 0 else x).to_bytes(8, "little")


def _triples(ctrl: bytes, piece: int) -> Iterator[tuple[int, int, int]]:
    """bsdiff's control triples (copy x bytes of base + diff, then y bytes of extra,
    then seek the base by z), split so that no triple gives more than ``piece`` bytes."""
    if len(ctrl) % _TRIPLE.size:
        raise CorruptObjectError("delta: malformed bsdiff control block")
    for a, b, c in _TRIPLE.iter_unpack(ctrl):
        x, y, z = _offtin(a), _offtin(b), _offtin(c)
        if x < 0 or y < 0:
            raise CorruptObjectError("delta: malformed bsdiff control block")
        while x + y > piece:
            if x:
                take = min(x, piece)
                yield take, 0, 0
                x -= take
            else:
                yield 0, piece, 0
                y -= piece
        yield x, y, z


def bspatch_pieces(base: Path | str, size: int, ctrl: bytes, diff: Reader,
                   extra: Reader, piece: int | None = None) -> Iterator[bytes]:
    """bsdiff's patch of the file ``base``, ``size`` bytes out, in batches.

    Reads ``diff`` and ``extra`` front to back and the base by ``pread``. Each
    batch is at most ``piece`` bytes out and spans at most ``2 * piece`` bytes of
    base, patched by bsdiff4's C code on those slices (a base position outside
    the file counts as 0, as in bspatch). Holds one batch: about ``4 * piece``.

    Raises:
        CorruptObjectError: the blocks do not fit the control triples or ``size``.
    """
    piece = piece or PIECE
    fd = os.open(base, os.O_RDONLY | os.O_CLOEXEC)
    try:
        base_size = os.fstat(fd).st_size
        batch: list[tuple[int, int, int]] = []
        first = lo = hi = 0
        out = 0
        oldpos = 0
        done = 0

        def flush() -> bytes:
            """Patch the batch against base[lo:hi] (the first triple starts at ``first``)."""
            nonlocal batch
            src = os.pread(fd, hi - lo, lo) if hi > lo else b""
            start = first - lo if hi > lo else first
            ctrl_b = _offtout(0) + _offtout(0) + _offtout(start) + b"".join(
                _offtout(x) + _offtout(y) + _offtout(z) for x, y, z in batch)
            dlen = sum(t[0] for t in batch)
            elen = sum(t[1] for t in batch)
            d, e = diff.read(dlen), extra.read(elen)
            if len(d) != dlen or len(e) != elen:
                raise CorruptObjectError("delta: bsdiff blocks are shorter than their control")
            try:
                data: bytes = bsdiff4.core.patch(src, dlen + elen, ctrl_b, d, e)
            except ValueError as exc:
                raise CorruptObjectError(f"delta: bsdiff patch does not apply: {exc}") from exc
            batch = []
            return data

        for x, y, z in _triples(ctrl, piece):
            a, b = max(oldpos, 0), min(oldpos + x, base_size)
            if batch and (out + x + y > piece or (b > a and (max(hi, b) - min(lo, a)
                                                             > 2 * piece))):
                data = flush()
                done += len(data)
                if data:
                    yield data
                out = 0
            if not batch:
                first, lo, hi = oldpos, a, a
            if b > a:
                if hi <= lo:
                    lo, hi = a, b
                else:
                    lo, hi = min(lo, a), max(hi, b)
            batch.append((x, y, z))
            out += x + y
            oldpos += x + z
        if batch:
            data = flush()
            done += len(data)
            if data:
                yield data
        if done != size or diff.read(1) or extra.read(1):
            raise CorruptObjectError("delta: bsdiff patch does not give the file's size")
    finally:
        os.close(fd)
