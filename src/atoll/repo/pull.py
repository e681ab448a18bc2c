"""Fetch what a :class:`~atoll.repo.plan.Plan` names into staging, then import it.

Nothing reaches the store before it is verified: a delta or a whole pack is
verified against its signed length and sha256 (``TargetFile``); a chunk
fetched by range is verified against the sha256 in the signed pack index.
The store then checks every object's id again while importing, and the
commit object is written last.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuf.api import exceptions as tuf_exc

from atoll.core.errors import CorruptObjectError, DownloadError, HostStateError, RepositoryError
from atoll.core.fsutil import sha256_file
from atoll.core.progress import track
from atoll.delta.pack import Chunk, PackIndex, import_chunk_file
from atoll.delta.static import apply_delta, repo_missing
from atoll.repo.plan import ChannelInfo, Plan, merge_ranges
from atoll.store.repo import Repo

if TYPE_CHECKING:
    from atoll.repo.client import UpdateClient

__all__ = ["fetch", "import_into"]


def fetch(client: UpdateClient, info: ChannelInfo, plan: Plan,
          idx: PackIndex | None) -> dict[str, Any]:
    """Download into the client's staging directory; returns what :func:`import_into` needs."""
    if plan.method == "delta":
        assert plan.delta is not None
        return {"delta": client._download(client._targetinfo(plan.delta))}
    if idx is None:
        idx = PackIndex.from_bytes(client._fetch_verified(info.index))
    if idx.commit != info.commit:
        raise RepositoryError(f"pack index is for {idx.commit[:12]}, expected {info.commit[:12]}")
    pack_tf = client._targetinfo(info.pack)
    if plan.method == "pack":
        return {"pack": client._download(pack_tf), "index": idx}
    chunk_dir = client.staging / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    want = {n: idx.chunks[n] for n in plan.chunks}
    todo = {n: c for n, c in want.items() if not _have_chunk(chunk_dir, c.sha256)}
    url = client._url(pack_tf)
    spans = merge_ranges((c.offset, c.clen) for c in todo.values())
    for off, length in track(spans, "download pack chunks", unit="bytes",
                             weight=lambda span: span[1]):
        frames = sorted((c for c in todo.values()
                         if off <= c.offset and c.offset + c.clen <= off + length),
                        key=lambda c: c.offset)
        try:
            start, pieces = client.fetcher.fetch_range(url, off, off + length - 1, length)
            if start != off:
                raise DownloadError(f"{url}: the server ignores HTTP ranges",
                                    resolution="serve the repository with a web server that "
                                    "supports Range requests")
            _save_frames(pieces, off, frames, chunk_dir)
        except tuf_exc.DownloadError as exc:
            raise DownloadError(f"download of pack chunks failed: {exc}",
                                resolution="retry: chunks already fetched are kept") from exc
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise HostStateError(f"disk full while downloading to {chunk_dir}",
                                     resolution="free space and retry") from exc
            raise
    missing = [n for n, c in want.items() if not _have_chunk(chunk_dir, c.sha256)]
    if missing:
        raise DownloadError(f"{len(missing)} pack chunks were not received",
                            resolution="retry `atoll update download`")
    return {"chunks": chunk_dir, "index": idx}


def _save_frames(pieces: Iterable[bytes], start: int, frames: list[Chunk],
                 chunk_dir: Path) -> None:
    """Write the frames found in a ranged response (``pieces`` from byte ``start``) to
    ``chunk_dir/<sha256>.zst``, each checked against the signed index's sha256 as it
    streams; holds one piece. A frame the response does not complete is not kept.

    Raises:
        RepositoryError: a frame does not match the signed index.
    """
    todo = deque(frames)
    pos = start
    fd = -1
    h: Any = None
    part = chunk_dir / ".part"
    try:
        for piece in pieces:
            view = memoryview(piece)
            while view and todo:
                c = todo[0]
                if pos < c.offset:  # bytes between the frames wanted
                    skip = min(len(view), c.offset - pos)
                    view, pos = view[skip:], pos + skip
                    continue
                if fd < 0:
                    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                 0o600)
                    h = hashlib.sha256()
                take = view[:c.offset + c.clen - pos]
                h.update(take)
                while take:
                    take = take[os.write(fd, take):]
                n = min(len(view), c.offset + c.clen - pos)
                view, pos = view[n:], pos + n
                if pos == c.offset + c.clen:
                    os.close(fd)
                    fd = -1
                    if h.hexdigest() != c.sha256:
                        raise RepositoryError(
                            f"pack chunk at {c.offset} does not match the signed index; "
                            "refused")
                    os.replace(part, chunk_dir / f"{c.sha256}.zst")
                    todo.popleft()
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            part.unlink()


def _have_chunk(d: Path, sha: str) -> bool:
    p = d / f"{sha}.zst"
    return p.exists() and sha256_file(p) == sha


def import_into(repo: Repo, info: ChannelInfo, plan: Plan, files: dict[str, Any]) -> None:
    """Import verified downloads into ``repo`` in one transaction (the commit last).

    Also completes a commit the store holds only in part (objects quarantined or
    lost): the plan then fetches just the missing objects' chunks.

    Raises:
        CorruptObjectError: an object does not match its id.
        StoreError: the download does not complete the commit.
    """
    if plan.method == "delta":
        assert plan.delta_from is not None
        apply_delta(repo, files["delta"], expect=(plan.delta_from, info.commit))
        return
    with repo.transaction(f"import of {info.commit[:12]}"):
        _import_pack(repo, info, plan, files)


def _import_pack(repo: Repo, info: ChannelInfo, plan: Plan, files: dict[str, Any]) -> None:
    """Import the objects the store lacks, chunk by chunk, each streamed from disk
    into the store (bounded memory: :func:`atoll.delta.pack.import_chunk_file`)."""
    idx: PackIndex = files["index"]
    need = {(o[0], o[1]) for o in idx.objects if not repo.has(o[0], o[1])}
    by_chunk = idx.rows_by_chunk()
    metas: dict[tuple[str, str], bytes] = {}
    if plan.method == "pack":
        numbers = [n for n, rows in sorted(by_chunk.items())
                   if any((r[0], r[1]) in need for r in rows)]
    else:
        numbers = list(plan.chunks)
    for n in track(numbers, f"import {info.commit}", unit="chunks"):
        c = idx.chunks[n]
        if plan.method == "pack":
            path, offset = files["pack"], c.offset
        else:
            path, offset = files["chunks"] / f"{c.sha256}.zst", 0
        import_chunk_file(repo, idx, n, path, offset, only=need, metas=metas,
                          rows=by_chunk.get(n, []))
    if (info.commit, "commit") not in metas and not repo.has(info.commit, "commit"):
        raise CorruptObjectError(f"the pack does not hold commit {info.commit[:12]}")
    gaps = repo_missing(repo, info.commit, metas)
    if gaps:
        raise CorruptObjectError(f"the pack leaves {len(gaps)} objects of the commit missing",
                                 details="\n".join(gaps[:20]))
    for (_oid, kind), data in metas.items():
        if kind == "dirtree":
            repo.write_meta_object(data, kind)
    if (info.commit, "commit") in metas:
        repo.write_meta_object(metas[(info.commit, "commit")], "commit")
