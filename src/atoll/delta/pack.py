"""Packs: every object of a commit, in chunks a client can fetch by HTTP range.

A host that lacks the delta's from-commit fetches the objects it is missing
from the commit's pack. Files on the update server::

    packs/<commit>.pack     zstd frames back to back, one per chunk
    packs/<commit>.index    zstd frame of canonical JSON (below)

Index::

    {"format": 1, "commit": ID,
     "chunks":  [[offset, clen, sha256-of-frame, usize], ...],
     "objects": [[id, kind, chunk, offset-in-chunk, size, meta|null], ...]}

A chunk holds consecutive objects in tree order (so one package's files
usually share a chunk) up to :data:`CHUNK_TARGET` uncompressed bytes; a large
file is a chunk of its own. Both files are TUF targets: the index is verified
whole, and every chunk fetched by range is checked against the sha256 the
verified index gives, before anything is imported; the store then checks each
object's id again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from atoll.core import canonjson
from atoll.core.errors import CorruptObjectError
from atoll.core.fsutil import open_atomic
from atoll.core.progress import progress
from atoll.delta._util import check_kind, commit_objects, meta_from_json
from atoll.store.repo import WORKERS, Repo

__all__ = ["CHUNK_TARGET", "Chunk", "PackIndex", "import_chunk", "write_pack"]

CHUNK_TARGET = 256 << 10
LEVEL = 19


@dataclass(frozen=True)
class Chunk:
    offset: int
    clen: int
    sha256: str
    usize: int


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


def write_pack(repo: Repo, commit: str, pack: Path, index: Path, *,
               level: int = LEVEL) -> PackIndex:
    """Write the pack and index of ``commit`` (atomically each).

    Chunks are compressed in parallel, a bounded batch at a time.
    """
    objs = commit_objects(repo, commit)
    chunks: list[Chunk] = []
    rows: list[tuple[str, str, int, int, int, dict[str, Any] | None]] = []
    batch: list[bytes] = []

    def compress(data: bytes) -> bytes:
        return zstandard.ZstdCompressor(level=level).compress(data)

    total = sum(_size(repo.object_path(o.id, o.kind)) for o in objs)
    with progress(f"pack {commit[:12]}", total, unit="bytes") as step, \
            open_atomic(pack) as fh, ThreadPoolExecutor(WORKERS) as pool:
        def drain() -> None:
            for raw, frame in zip(batch, pool.map(compress, batch), strict=True):
                chunks.append(Chunk(fh.tell(), len(frame), hashlib.sha256(frame).hexdigest(),
                                    len(raw)))
                fh.write(frame)
                step.advance(len(raw))
            batch.clear()

        buf = bytearray()
        for o in objs:
            if o.kind == "file":
                data = repo.read_file_content(o.id)
                meta: dict[str, Any] | None = repo.file_meta(o.id).to_json()
            else:
                data = repo.read_meta_object(o.id, o.kind)
                meta = None
            if buf and len(buf) + len(data) > CHUNK_TARGET:
                batch.append(bytes(buf))
                buf.clear()
                if len(batch) >= 64:
                    drain()
            rows.append((o.id, o.kind, len(chunks) + len(batch), len(buf), len(data), meta))
            buf += data
        if buf:
            batch.append(bytes(buf))
        drain()
    idx = PackIndex(commit, chunks, rows)
    with open_atomic(index) as fh:
        fh.write(idx.to_bytes())
    return idx


def _size(path: Path) -> int:
    """An object's size, for the progress total (0 if it is missing: reading it fails)."""
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def import_chunk(repo: Repo, idx: PackIndex, number: int, frame: bytes,
                 *, only: set[tuple[str, str]] | None = None,
                 metas: dict[tuple[str, str], bytes]) -> None:
    """Import the file objects of one chunk; dirtrees and commits go to ``metas``.

    The caller writes ``metas`` once every file is in (the commit last).

    Raises:
        CorruptObjectError: the frame does not match the index, or an object its id.
    """
    c = idx.chunks[number]
    if hashlib.sha256(frame).hexdigest() != c.sha256:
        raise CorruptObjectError(f"pack chunk {number} of {idx.commit[:12]}: sha256 mismatch")
    data = zstandard.ZstdDecompressor().decompress(frame, max_output_size=c.usize)
    for oid, kind, num, off, size, meta in idx.objects:
        if num != number or (only is not None and (oid, kind) not in only):
            continue
        content = data[off:off + size]
        if kind == "file":
            if meta is None:
                raise CorruptObjectError(f"pack index: file {oid} without meta")
            repo.import_file_object(oid, meta_from_json(meta), content)
        else:
            if hashlib.sha256(content).hexdigest() != oid:
                raise CorruptObjectError(f"{kind} object {oid}: content does not match its id")
            metas[(oid, kind)] = content
