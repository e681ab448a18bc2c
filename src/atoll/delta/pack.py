"""Packs: every object of a commit, in chunks a client can fetch by HTTP range.

A host that lacks the delta's from-commit fetches the objects it is missing
from the commit's pack. Files on the update server::

    packs/<commit>.pack     zstd frames back to back, one per chunk
    packs/<commit>.index    zstd frame of canonical JSON (below)

Index (format 1, unchanged since the first release: every host reads it)::

    {"format": 1, "commit": ID,
     "chunks":  [[offset, clen, sha256-of-frame, usize], ...],
     "objects": [[id, kind, chunk, offset-in-chunk, size, meta|null], ...]}

**Chunks.** Objects go in tree order (so one package's files usually share a
chunk). A file of at least :data:`SOLO_MIN` bytes is a chunk of its own;
smaller objects are gathered into chunks of :data:`CHUNK_MIN` to
:data:`CHUNK_MAX` bytes, cut after an object chosen by its id (with a
probability proportional to its size, :data:`CHUNK_AVG` bytes apart on
average). Cuts depend on the objects around them only, so a chunk whose
objects did not change between two commits is the same chunk in both packs
and an earlier publish's compressed frame is reused (:mod:`atoll.delta.cache`).

**Levels per kind of object.** Content that is already compressed (gzip, xz,
zstd, zip, images..., or what a quick level-1 probe cannot shrink) is stored
at :data:`PACKED_LEVEL`; an object of at least :data:`LARGE_MIN` bytes (an app
image's tar, a Go binary: few files, half of a database image's compression
time) at :data:`LARGE_LEVEL`; the rest at :data:`LEVEL`. A publish level, when
one is given, replaces the last two. (Why: docs/delivery.md, "Levels per kind
of object"; figures in docs/benchmarks.md, "Publishing the database image".)
Frames are
compressed in parallel (and a large file with zstd's own threads), written in
order. Every frame's window is at most :data:`WINDOW_MAX`: what a host's
decoder holds while importing a chunk.

Both files are TUF targets: the index is verified whole, and every chunk
fetched by range is checked against the sha256 the verified index gives,
before anything is imported; the store then checks each object's id again.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from atoll.core import canonjson
from atoll.core.errors import CorruptObjectError
from atoll.core.fsutil import open_atomic
from atoll.core.progress import progress
from atoll.delta._stream import Limited, Reader, drain, read_pieces
from atoll.delta._util import ObjectRef, check_kind, commit_objects, meta_from_json
from atoll.delta.cache import PublishCache
from atoll.store.objects import file_hasher
from atoll.store.repo import WORKERS, Repo

__all__ = [
    "CHUNK_AVG",
    "CHUNK_MAX",
    "CHUNK_MIN",
    "LARGE_LEVEL",
    "LARGE_MIN",
    "LEVEL",
    "PACKED_LEVEL",
    "SOLO_MIN",
    "WINDOW_MAX",
    "Chunk",
    "PackIndex",
    "import_chunk",
    "import_chunk_file",
    "verify_frame",
    "write_pack",
]

LEVEL = 18
LARGE_LEVEL = 17
LARGE_MIN = 16 << 20
PACKED_LEVEL = 1
CHUNK_MIN = 128 << 10
CHUNK_AVG = 1 << 20
CHUNK_MAX = 4 << 20
SOLO_MIN = 1 << 20
WINDOW_LOG_MAX = 23
WINDOW_MAX = 1 << WINDOW_LOG_MAX
# A large file is compressed with zstd's own threads too.
THREADED_MIN = 32 << 20
# Compressed and waiting to be written in order: at most this many bytes of input.
IN_FLIGHT = 256 << 20
_PACKED_MAGIC = (
    b"\x1f\x8b",                 # gzip
    b"\xfd7zXZ\x00",             # xz
    b"\x28\xb5\x2f\xfd",         # zstd
    b"BZh",                      # bzip2
    b"\x04\x22\x4d\x18",         # lz4
    b"PK\x03\x04",               # zip, jar, wheel
    b"\x89PNG",                  # png
    b"\xff\xd8\xff",             # jpeg
    b"GIF8",                     # gif
    b"7z\xbc\xaf\x27\x1c",       # 7z
    b"\x5d\x00\x00",             # lzma
)


@dataclass(frozen=True)
class Chunk:
    offset: int
    clen: int
    sha256: str
    usize: int


Row = tuple[str, str, int, int, int, "dict[str, Any] | None"]


@dataclass
class PackIndex:
    """A parsed pack index."""

    commit: str
    chunks: list[Chunk]
    objects: list[tuple[str, str, int, int, int, dict[str, Any] | None]]

    @classmethod
    def from_bytes(cls, data: bytes) -> PackIndex:
        """Parse an index file.

        Raises:
            CorruptObjectError: malformed.
        """
        try:
            raw = canonjson.loads(zstandard.ZstdDecompressor().decompress(
                data, max_output_size=512 << 20))
            chunks = [Chunk(int(o), int(n), str(h), int(u)) for o, n, h, u in raw["chunks"]]
            objs = [(str(i), check_kind(str(k)), int(c), int(o), int(s), m)
                    for i, k, c, o, s, m in raw["objects"]]
            for o in objs:
                if not 0 <= o[2] < len(chunks):
                    raise ValueError(f"object {o[0]}: bad chunk number")
                if o[3] < 0 or o[4] < 0 or o[3] + o[4] > chunks[o[2]].usize:
                    raise ValueError(f"object {o[0]}: outside its chunk")
            return cls(str(raw["commit"]), chunks, objs)
        except (ValueError, KeyError, TypeError, zstandard.ZstdError) as exc:
            raise CorruptObjectError(f"not a valid atoll pack index: {exc}") from exc

    def to_bytes(self) -> bytes:
        return zstandard.ZstdCompressor(level=19).compress(canonjson.dumps({
            "format": 1, "commit": self.commit,
            "chunks": [[c.offset, c.clen, c.sha256, c.usize] for c in self.chunks],
            "objects": [list(o) for o in self.objects],
        }))

    def chunks_for(self, missing: Iterable[tuple[str, str]]) -> list[int]:
        """Numbers of the chunks holding the given (id, kind) objects."""
        want = set(missing)
        return sorted({o[2] for o in self.objects if (o[0], o[1]) in want})

    def rows_by_chunk(self) -> dict[int, list[tuple[str, str, int, int, int,
                                                    dict[str, Any] | None]]]:
        """Each chunk's objects, by offset."""
        out: dict[int, list[tuple[str, str, int, int, int, dict[str, Any] | None]]] = {}
        for o in self.objects:
            out.setdefault(o[2], []).append(o)
        for rows in out.values():
            rows.sort(key=lambda r: r[3])
        return out


# -- writing -------------------------------------------------------------------

@dataclass
class _Planned:
    """A chunk to write: its objects (and the bytes of meta objects, read already)."""

    objs: list[tuple[ObjectRef, int]] = field(default_factory=list)
    meta: dict[tuple[str, str], bytes] = field(default_factory=dict)
    size: int = 0
    packed: bool = False


def _cut_after(oid: str, size: int) -> bool:
    """Whether a chunk ends after this object: decided by its id, with a probability
    proportional to its size (a cut every :data:`CHUNK_AVG` bytes on average)."""
    return int(oid[:12], 16) < (size * (1 << 48)) // CHUNK_AVG


def is_packed(head: bytes) -> bool:
    """Whether content starting with ``head`` is already compressed: a known magic,
    or a level-1 zstd probe of ``head`` that saves less than 5 %."""
    if head.startswith(_PACKED_MAGIC):
        return True
    if len(head) < 4096:
        return False
    return len(zstandard.ZstdCompressor(level=1).compress(head)) > 0.95 * len(head)


def _plan(repo: Repo, objs: list[ObjectRef]) -> list[_Planned]:
    out: list[_Planned] = []
    cur = _Planned()
    for o in objs:
        data = None
        if o.kind == "file":
            path = repo.file_path(o.id)
            st = os.lstat(path)
            size = st.st_size
            if size >= SOLO_MIN and not os.path.islink(path):
                if cur.objs:
                    out.append(cur)
                    cur = _Planned()
                with open(path, "rb") as fh:
                    head = fh.read(64 << 10)
                out.append(_Planned([(o, size)], size=size, packed=is_packed(head)))
                continue
        else:
            data = repo.read_meta_object(o.id, o.kind)
            size = len(data)
        if cur.objs and cur.size + size > CHUNK_MAX:
            out.append(cur)
            cur = _Planned()
        cur.objs.append((o, size))
        cur.size += size
        if data is not None:
            cur.meta[(o.id, o.kind)] = data
        if cur.size >= CHUNK_MIN and _cut_after(o.id, size):
            out.append(cur)
            cur = _Planned()
    if cur.objs:
        out.append(cur)
    return out


def _params(level: int, size: int) -> zstandard.ZstdCompressionParameters:
    p = zstandard.ZstdCompressionParameters.from_level(level, source_size=size)
    wlog = min(p.window_log, WINDOW_LOG_MAX)
    threads = WORKERS if size >= THREADED_MIN else 0
    return zstandard.ZstdCompressionParameters.from_level(
        level, source_size=size, window_log=wlog, threads=threads)


def write_pack(repo: Repo, commit: str, pack: Path, index: Path, *,
               level: int | None = None, cache: PublishCache | None = None) -> PackIndex:
    """Write the pack and index of ``commit`` (atomically each).

    Args:
        level: zstd level (1-22) of all content that is not compressed already; None:
            by kind (:data:`LEVEL`, :data:`LARGE_LEVEL` for a file of at least
            :data:`LARGE_MIN` bytes).
        cache: reuse (and keep) compressed chunks of earlier publishes.

    Raises:
        StoreError: an object is missing or damaged.

    Returns:
        The index written.
    """
    objs = commit_objects(repo, commit)
    planned = _plan(repo, objs)
    chunks: list[Chunk] = []
    rows: list[Row] = []
    total = sum(p.size for p in planned)
    with progress(f"pack {commit[:12]}", total, unit="bytes") as step, \
            open_atomic(pack) as fh, ThreadPoolExecutor(WORKERS) as pool:
        def work(p: _Planned) -> tuple[bytes, list[Row]]:
            frame, prow = _chunk(repo, p, level, cache)
            step.advance(p.size)
            return frame, prow

        pending: deque[tuple[_Planned, Future[tuple[bytes, list[Row]]]]] = deque()
        in_flight = 0

        def write_one() -> None:
            nonlocal in_flight
            p, fut = pending.popleft()
            frame, prow = fut.result()
            in_flight -= p.size
            n = len(chunks)
            chunks.append(Chunk(fh.tell(), len(frame), hashlib.sha256(frame).hexdigest(),
                                p.size))
            rows.extend((i, k, n, off, size, m) for i, k, _c, off, size, m in prow)
            fh.write(frame)

        for p in planned:
            while pending and in_flight + p.size > IN_FLIGHT:
                write_one()
            pending.append((p, pool.submit(work, p)))
            in_flight += p.size
        while pending:
            write_one()
    idx = PackIndex(commit, chunks, rows)
    with open_atomic(index) as fh:
        fh.write(idx.to_bytes())
    return idx


def _level(p: _Planned, level: int | None) -> int:
    """The zstd level of one chunk (module docstring, "Levels per kind of object")."""
    if p.packed:
        return PACKED_LEVEL
    if level is not None:
        return level
    return LARGE_LEVEL if p.size >= LARGE_MIN else LEVEL  # one object: CHUNK_MAX < LARGE_MIN


def _chunk(repo: Repo, p: _Planned, level: int | None,
           cache: PublishCache | None) -> tuple[bytes, list[Row]]:
    """One chunk's frame and rows (chunk number 0: the writer renumbers)."""
    lvl = _level(p, level)
    rows: list[Row] = []
    off = 0
    for o, size in p.objs:
        meta = repo.file_meta(o.id).to_json() if o.kind == "file" else None
        rows.append((o.id, o.kind, 0, off, size, meta))
        off += size
    key = None
    if cache is not None:
        key = cache.key("pack-chunk", level=lvl, window_log_max=WINDOW_LOG_MAX,
                        objects=[[r[0], r[1], r[4]] for r in rows])
        frame = cache.get(key)
        if frame is not None and _decodes_to(frame, rows, p):
            return frame, rows
    data = b"".join(repo.read_file_content(o.id) if o.kind == "file"
                    else p.meta[(o.id, o.kind)] for o, _s in p.objs)
    if len(data) != p.size:
        raise CorruptObjectError("an object changed size while it was packed")
    frame = zstandard.ZstdCompressor(compression_params=_params(lvl, len(data))).compress(data)
    if cache is not None and key is not None:
        cache.put(key, frame)
    return frame, rows


def _decodes_to(frame: bytes, rows: list[Row], p: _Planned) -> bool:
    """Whether a cached frame decompresses to exactly these objects (by their ids)."""
    try:
        data = zstandard.ZstdDecompressor(max_window_size=WINDOW_MAX).decompress(
            frame, max_output_size=p.size)
    except zstandard.ZstdError:
        return False
    if len(data) != p.size:
        return False
    for oid, kind, _c, off, size, meta in rows:
        part = data[off:off + size]
        if kind == "file":
            assert meta is not None
            h = file_hasher(meta_from_json(meta))
            h.update(part)
        else:
            h = hashlib.sha256(part)
        if h.hexdigest() != oid:
            return False
    return True


# -- reading -------------------------------------------------------------------

def verify_frame(reader: Reader, clen: int, sha256: str) -> bool:
    """Whether the next ``clen`` bytes of ``reader`` have this sha256 (read in pieces)."""
    h = hashlib.sha256()
    try:
        for data in read_pieces(reader, clen):
            h.update(data)
    except CorruptObjectError:
        return False
    return h.hexdigest() == sha256


def import_chunk_file(repo: Repo, idx: PackIndex, number: int, path: Path, offset: int = 0,
                      *, only: set[tuple[str, str]] | None = None,
                      metas: dict[tuple[str, str], bytes],
                      rows: list[tuple[str, str, int, int, int,
                                       dict[str, Any] | None]] | None = None) -> None:
    """Import the objects of chunk ``number``, whose frame is at ``offset`` of the file
    ``path``, in bounded memory: the frame is checked against the index's sha256
    (read in pieces), then decompressed as a stream (window at most 128 MiB, what
    any atoll pack uses; :data:`WINDOW_MAX` for packs written now) into the store
    object by object. File objects go to the store (each checks its id);
    dirtrees and commits to ``metas``, for the caller to write once every file is
    in (the commit last). ``rows``: the chunk's index rows by offset, if the caller
    has them (:meth:`PackIndex.rows_by_chunk`).

    Raises:
        CorruptObjectError: the frame does not match the index, or an object its id.
    """
    c = idx.chunks[number]
    with open(path, "rb") as fh:
        fh.seek(offset)
        if not verify_frame(fh, c.clen, c.sha256):
            raise CorruptObjectError(
                f"pack chunk {number} of {idx.commit[:12]}: sha256 mismatch")
        fh.seek(offset)
        _import_frame(repo, idx, number, Limited(fh, c.clen), only=only, metas=metas,
                      rows=rows)


def import_chunk(repo: Repo, idx: PackIndex, number: int, frame: bytes,
                 *, only: set[tuple[str, str]] | None = None,
                 metas: dict[tuple[str, str], bytes]) -> None:
    """:func:`import_chunk_file` for a frame in memory.

    Raises:
        CorruptObjectError: the frame does not match the index, or an object its id.
    """
    import io

    c = idx.chunks[number]
    if hashlib.sha256(frame).hexdigest() != c.sha256:
        raise CorruptObjectError(f"pack chunk {number} of {idx.commit[:12]}: sha256 mismatch")
    _import_frame(repo, idx, number, io.BytesIO(frame), only=only, metas=metas, rows=None)


def _import_frame(repo: Repo, idx: PackIndex, number: int, frame: Reader, *,
                  only: set[tuple[str, str]] | None, metas: dict[tuple[str, str], bytes],
                  rows: list[tuple[str, str, int, int, int, dict[str, Any] | None]] | None
                  ) -> None:
    c = idx.chunks[number]
    if rows is None:
        rows = sorted((o for o in idx.objects if o[2] == number), key=lambda r: r[3])
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << 27)
    try:
        with dctx.stream_reader(frame, closefd=False) as reader:  # type: ignore[arg-type]
            for piece in _objects(reader, c.usize, rows, only):
                oid, kind, meta, size, pieces = piece
                if kind == "file":
                    if meta is None:
                        raise CorruptObjectError(f"pack index: file {oid} without meta")
                    repo.import_file_stream(oid, meta_from_json(meta), size, pieces)
                    drain(pieces)
                else:
                    content = b"".join(pieces)
                    if hashlib.sha256(content).hexdigest() != oid:
                        raise CorruptObjectError(
                            f"{kind} object {oid}: content does not match its id")
                    metas[(oid, kind)] = content
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(
            f"pack chunk {number} of {idx.commit[:12]}: bad compressed data: {exc}") from exc


def _objects(reader: Reader, usize: int,
             rows: list[tuple[str, str, int, int, int, dict[str, Any] | None]],
             only: set[tuple[str, str]] | None
             ) -> Iterator[tuple[str, str, dict[str, Any] | None, int, Iterator[bytes]]]:
    """(id, kind, meta, size, content pieces) of each wanted object of a chunk, in
    offset order; skipped bytes are read and dropped (read the pieces, or drain
    them, before the next)."""
    pos = 0
    for oid, kind, _c, off, size, meta in rows:
        if off < pos or off + size > usize:
            raise CorruptObjectError("pack index: objects of a chunk overlap")
        if only is not None and (oid, kind) not in only:
            continue
        drain(read_pieces(reader, off - pos))
        yield oid, kind, meta, size, read_pieces(reader, size)
        pos = off + size
