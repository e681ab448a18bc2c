"""Applying a static delta in bounded memory (internal; :func:`atoll.delta.apply_delta`).

Every object streams from the delta file into :meth:`Repo.import_file_stream`,
which hashes it as it writes and keeps it only when its id matches. What the
process holds at most, by phase (format 2; ``P`` = :data:`~atoll.delta._stream.PIECE`,
1 MiB):

* the header (parsed JSON: about 1 kB per new file);
* the solid stream: the zstd window (at most :data:`~atoll.delta.format.SOLID_WINDOW_MAX`) and
  one piece; a meta object (a dirtree) whole; a bsdiff entry either whole
  (base + ctrl + diff + extra + result, only when that is at most
  :data:`~atoll.delta.format.BSPATCH_IN_MEMORY`) or in batches of about ``4 P`` (the diff block
  spooled to a temp file, the base read by ``pread``);
* then each patch segment: the base window (at most :data:`~atoll.delta.format.SEG_BASE_MAX`)
  twice (the window and zstd's copy of it as a dictionary), the frame and its
  result (each at most :data:`~atoll.delta.format.SEG_MAX`); the result streams on through
  ``gzip``/``xz`` (child processes: their own memory) into the store.

The solid stream is closed before the patches begin, so the two phases do not
add up. Format 1 deltas are read by the same code: their patches are one
segment whose dictionary is the whole base, so they are bounded by their
largest base, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Generator, Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import IO, Any

import bsdiff4.core  # type: ignore[import-untyped]
import zstandard

from atoll.core.errors import CorruptObjectError, HostStateError, StoreError, ToolError
from atoll.core.progress import progress
from atoll.delta import format as fmt
from atoll.delta import recompress
from atoll.delta._stream import (
    XZ_MAGIC,
    Cursor,
    Limited,
    Reader,
    bspatch_pieces,
    drain,
    file_pieces,
    gunzip_pieces,
    read_pieces,
    xz_expanded_pieces,
)
from atoll.delta._util import meta_from_json, raw_dict
from atoll.delta.format import DeltaHeader, read_header
from atoll.store.objects import Commit, parse_dirtree
from atoll.store.repo import Repo

__all__ = ["apply", "repo_missing"]

_REBUILT = ("patch", "gzip", "xz")


def apply(repo: Repo, path: Path, expect: tuple[str, str] | None) -> str:
    """Import the commit the delta at ``path`` carries (inside a transaction)."""
    with open(path, "rb") as fh:
        hdr = read_header(fh)
        if expect is not None and (hdr.from_commit, hdr.to_commit) != expect:
            raise CorruptObjectError(
                f"delta is {hdr.from_commit[:12]}->{hdr.to_commit[:12]}, "
                f"expected {expect[0][:12]}->{expect[1][:12]}")
        if not repo.has(hdr.from_commit, "commit"):
            raise HostStateError(f"delta needs commit {hdr.from_commit[:12]}, not in {repo.path}")
        missing = sorted({str(f["base"]) for f in hdr.files
                          if (f["how"] in ("patch", "bsdiff", "xz")
                              or (f["how"] == "gzip" and not f.get("dict")))
                          and not repo.has(str(f["base"]), "file")})
        if missing:
            raise HostStateError(f"delta needs {len(missing)} file object(s) the store lacks",
                                 details="\n".join(missing[:20]),
                                 resolution="run `atoll store fsck`; pull without delta")
        metas: dict[tuple[str, str], bytes] = {}
        try:
            with progress(f"import delta to {hdr.to_commit[:12]}", len(hdr.files),
                          unit="files") as step:
                _solid(repo, fh, hdr, metas, step.advance)
                _patches(repo, fh, hdr, step.advance)
        except zstandard.ZstdError as exc:
            raise CorruptObjectError(f"delta {path.name}: bad compressed data: {exc}") from exc
    for (oid, kind), data in metas.items():
        if hashlib.sha256(data).hexdigest() != oid:
            raise CorruptObjectError(f"{kind} object {oid}: content does not match its id")
    need = repo_missing(repo, hdr.to_commit, metas)
    if need:
        raise StoreError(f"delta to {hdr.to_commit[:12]} is incomplete: "
                         f"{len(need)} objects missing", details="\n".join(need[:20]))
    for (_oid, kind), data in metas.items():
        if kind == "dirtree":
            repo.write_meta_object(data, kind)
    repo.write_meta_object(metas[(hdr.to_commit, "commit")], "commit")
    return hdr.to_commit


def _solid(repo: Repo, fh: IO[bytes], hdr: DeltaHeader, metas: dict[tuple[str, str], bytes],
           advance: Any) -> None:
    """The solid stream: meta objects, raw files, bsdiff entries (in header order)."""
    fh.seek(hdr.offsets["solid"])
    region = Limited(fh, hdr.offsets["patches"] - hdr.offsets["solid"])
    window = fmt.SOLID_WINDOW_MAX if hdr.format >= 2 else 1 << 27
    dctx = zstandard.ZstdDecompressor(max_window_size=window)
    with dctx.stream_reader(region, read_across_frames=hdr.format >= 2,  # type: ignore[arg-type]
                            closefd=False) as reader:
        for oid, kind, size in hdr.meta:
            if size > fmt.META_MAX:
                raise CorruptObjectError(f"delta: {kind} {oid} is implausibly large")
            metas[(oid, kind)] = b"".join(read_pieces(reader, size))
        for f in hdr.files:
            how = f["how"]
            if how == "raw":
                pieces = read_pieces(reader, int(f["size"]))
                repo.import_file_stream(str(f["id"]), meta_from_json(f["meta"]),
                                        int(f["size"]), pieces)
                drain(pieces)
                advance(1)
            elif how == "bsdiff":
                _bsdiff(repo, reader, f)
                advance(1)
            elif how not in _REBUILT:
                raise CorruptObjectError(f"delta: unknown method {how!r} for {f['id']}")


def _bsdiff(repo: Repo, reader: Reader, f: dict[str, Any]) -> None:
    lengths = [int(n) for n in f["raw"]]
    if len(lengths) != 3 or min(lengths) < 0:
        raise CorruptObjectError("delta: malformed bsdiff entry")
    oid, size, base = str(f["id"]), int(f["size"]), str(f["base"])
    meta = meta_from_json(f["meta"])
    base_path = repo.file_path(base)
    base_size = base_path.lstat().st_size
    if base_size + lengths[1] + lengths[2] + 2 * size <= fmt.BSPATCH_IN_MEMORY:
        ctrl, diff, extra = (b"".join(read_pieces(reader, n)) for n in lengths)
        try:
            data = bsdiff4.core.patch(repo.read_file_content(base), size, ctrl, diff, extra)
        except ValueError as exc:
            raise CorruptObjectError(f"delta: bsdiff patch does not apply: {exc}") from exc
        repo.import_file_stream(oid, meta, size, [data])
        return
    if lengths[0] > fmt.META_MAX:
        raise CorruptObjectError(f"delta: bsdiff control block of {oid} is implausibly large")
    ctrl = b"".join(read_pieces(reader, lengths[0]))
    with tempfile.TemporaryFile(dir=repo.tmp) as spool:
        for data in read_pieces(reader, lengths[1]):  # the diff block, read as needed
            spool.write(data)
        spool.seek(0)
        extra_block = Limited(reader, lengths[2])
        repo.import_file_stream(oid, meta, size,
                                bspatch_pieces(base_path, size, ctrl, spool, extra_block))
        drain(read_pieces(extra_block, extra_block.left))  # skipped: the store had it


def _patches(repo: Repo, fh: IO[bytes], hdr: DeltaHeader, advance: Any) -> None:
    """Files rebuilt from patch frames (after the solid stream, in header order)."""
    pos = hdr.offsets["patches"]
    for f in hdr.files:
        if f["how"] not in _REBUILT:
            continue
        segs = _segments(hdr, f)
        start, pos = pos, pos + sum(s[0] for s in segs)
        content = _content(repo, fh, hdr, f, start, segs)
        try:  # not read at all when the store has the file: its base is never opened
            repo.import_file_stream(str(f["id"]), meta_from_json(f["meta"]), int(f["size"]),
                                    content)
        except ToolError as exc:  # gzip/xz missing, failed, or short of memory
            raise HostStateError(f"cannot rebuild file {f['id'][:12]} ({f['how']}) on this "
                                 f"host: {exc.brief}", details=exc.details,
                                 resolution="the objects are fetched from the pack instead"
                                 ) from exc
        finally:
            content.close()
        advance(1)


def _content(repo: Repo, fh: IO[bytes], hdr: DeltaHeader, f: dict[str, Any], start: int,
             segs: list[tuple[int, int, int, int]]
             ) -> Generator[bytes | memoryview, None, None]:
    with _base(repo, hdr, f) as base:
        yield from _rebuilt(f, _expanded(fh, start, segs, base))


def _segments(hdr: DeltaHeader, f: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    """(frame length, size out, base window offset, base window length) of each
    segment of a patch entry; checked against the format's bounds. Format 1: one
    segment, the whole base (length -1: to the end)."""
    usize = int(f["usize"]) if f["how"] in ("gzip", "xz") else int(f["size"])
    if hdr.format < 2:
        return [(int(f["clen"]), usize, 0, -1)]
    segs = [(int(a), int(b), int(c), int(d)) for a, b, c, d in f["segs"]]
    if sum(s[1] for s in segs) != usize or any(
            s[1] > fmt.SEG_MAX or s[3] > fmt.SEG_BASE_MAX or min(s) < 0 for s in segs):
        raise CorruptObjectError(f"delta: malformed patch segments for {f['id']}")
    return segs


class _Base:
    """Random access to a patch's base stream: files end to end (``pread``)."""

    def __init__(self, files: Sequence[IO[bytes]]):
        self.files = files
        self.sizes = [os.fstat(f.fileno()).st_size for f in files]
        self.size = sum(self.sizes)

    def read(self, offset: int, n: int) -> bytearray:
        """Bytes ``[offset, offset + n)`` (n = -1: to the end).

        Raises:
            CorruptObjectError: the base is shorter.
        """
        if n < 0:
            n = max(0, self.size - offset)
        if offset + n > self.size:
            raise CorruptObjectError("delta: a patch's base is shorter than its windows")
        out = bytearray(n)
        view = memoryview(out)
        done = 0
        for f, size in zip(self.files, self.sizes, strict=True):
            if done == n:
                break
            if offset >= size:
                offset -= size
                continue
            k = min(size - offset, n - done)
            got = os.preadv(f.fileno(), [view[done:done + k]], offset)
            if got != k:
                raise CorruptObjectError("delta: a patch's base changed while read")
            done += k
            offset = 0
        view.release()
        return out


@contextlib.contextmanager
def _base(repo: Repo, hdr: DeltaHeader, f: dict[str, Any]) -> Iterator[_Base]:
    """The bytes a patch's dictionaries are windows of: the base file, the listed
    files end to end, or the base decompressed into a temp file (gzip, xz)."""
    with contextlib.ExitStack() as stack:
        if f.get("dict"):
            try:
                files = [stack.enter_context(open(repo.file_path(str(i)), "rb"))
                         for i in f["dict"]]
            except OSError as exc:
                raise CorruptObjectError(f"delta: dictionary of {f['id']} incomplete") from exc
            yield _Base(files)
            return
        path = repo.file_path(str(f["base"]))
        pieces: Iterator[bytes] | None = None
        if f["how"] == "gzip" and f.get("base_gz"):
            pieces = gunzip_pieces(file_pieces(path))
        elif f["how"] == "xz" and f.get("base_xz") not in (None, False):
            offset = f["base_xz"] if hdr.format >= 2 else _find(path, XZ_MAGIC)
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise CorruptObjectError(f"delta: base {f['base']} holds no xz stream")
            pieces = xz_expanded_pieces(path, offset)
        if pieces is None:
            yield _Base([stack.enter_context(open(path, "rb"))])
            return
        spool = stack.enter_context(tempfile.TemporaryFile(dir=repo.tmp))
        for data in pieces:
            spool.write(data)
        spool.flush()
        yield _Base([spool])


def _find(path: Path, magic: bytes) -> int | None:
    """Offset of the first ``magic`` in a file (read in pieces)."""
    tail = b""
    done = 0
    for data in file_pieces(path):
        hay = tail + data
        at = hay.find(magic)
        if at >= 0:
            return done - len(tail) + at
        tail = hay[-(len(magic) - 1):]
        done += len(data)
    return None


def _expanded(fh: IO[bytes], start: int, segs: list[tuple[int, int, int, int]],
              base: _Base) -> Iterator[bytes]:
    """The content the patch frames give: each segment decompressed with its window
    of the base as a raw-content dictionary (zstd ``--patch-from``)."""
    pos = start
    for clen, usize, boff, blen in segs:
        fh.seek(pos)
        pos += clen
        frame = fh.read(clen)
        if len(frame) != clen:
            raise CorruptObjectError("delta ends early: a patch frame is short")
        window = base.read(boff, blen)
        dctx = _dctx(window)
        del window  # zstd keeps its own copy
        out = dctx.decompress(frame, max_output_size=usize)
        del dctx, frame
        if len(out) != usize:
            raise CorruptObjectError("delta: a patch frame gives the wrong size")
        yield out
        del out


def _dctx(dictionary: bytes | bytearray) -> zstandard.ZstdDecompressor:
    # One-shot decompression into a buffer of the frame's size needs no window
    # buffer, whatever window the frame declares: no limit is needed here.
    if not len(dictionary):
        return zstandard.ZstdDecompressor(max_window_size=1 << 31)
    return zstandard.ZstdDecompressor(dict_data=raw_dict(dictionary), max_window_size=1 << 31)


def _rebuilt(f: dict[str, Any], expanded: Iterable[bytes]) -> Iterator[bytes | memoryview]:
    """The file from its expanded content: as is, or recompressed by gzip / xz."""
    if f["how"] == "gzip":
        return recompress.regzip_pieces(expanded, int(f["level"]))
    if f["how"] == "xz":
        off, n = int(f["offset"]), int(f["xz_raw"])
        cur = Cursor(expanded)
        return chain(cur.take(off),
                     recompress.rexz_pieces(cur.take(n), [str(o) for o in f["options"]]),
                     cur.rest())
    return iter(expanded)


def repo_missing(repo: Repo, commit: str, pending: dict[tuple[str, str], bytes]) -> list[str]:
    """Objects ``commit`` reaches that neither ``repo`` nor ``pending`` hold."""
    raw = pending.get((commit, "commit"))
    if raw is None and repo.has(commit, "commit"):
        raw = repo.read_meta_object(commit, "commit")
    if raw is None:
        return [f"commit {commit}"]
    stack = [Commit.from_bytes(raw).tree]
    out: list[str] = []
    done: set[str] = set()
    while stack:
        t = stack.pop()
        if t in done:
            continue
        done.add(t)
        data = pending.get((t, "dirtree"))
        if data is None:
            if not repo.has(t, "dirtree"):
                out.append(f"dirtree {t}")
                continue
            data = repo.read_meta_object(t, "dirtree")
        for e in parse_dirtree(data):
            if e.is_dir:
                stack.append(e.id)
            elif not repo.has(e.id, "file"):
                out.append(f"file {e.id}")
    return out
