"""Fetch what a :class:`~atoll.repo.plan.Plan` names into staging, then import it.

Nothing reaches the store before it is verified: a delta or a whole pack is
verified against its signed length and sha256 (``TargetFile``); a chunk
fetched by range is verified against the sha256 in the signed pack index.
The store then checks every object's id again while importing, and the
commit object is written last.
"""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuf.api import exceptions as tuf_exc

from atoll.core.errors import CorruptObjectError, DownloadError, HostStateError, RepositoryError
from atoll.core.fsutil import atomic_write
from atoll.core.progress import track
from atoll.delta.pack import PackIndex, import_chunk
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
        try:
            start, chunks = client.fetcher.fetch_range(url, off, off + length - 1, length)
            if start != off:
                raise DownloadError(f"{url}: the server ignores HTTP ranges",
                                    resolution="serve the repository with a web server that "
                                    "supports Range requests")
            buf = b"".join(chunks)
        except tuf_exc.DownloadError as exc:
            raise DownloadError(f"download of pack chunks failed: {exc}",
                                resolution="retry: chunks already fetched are kept") from exc
        for _n, c in todo.items():
            if off <= c.offset and c.offset + c.clen <= off + len(buf):
                frame = buf[c.offset - off:c.offset - off + c.clen]
                if hashlib.sha256(frame).hexdigest() != c.sha256:
                    raise RepositoryError(
                        f"pack chunk at {c.offset} does not match the signed index; refused")
                try:
                    atomic_write(chunk_dir / f"{c.sha256}.zst", frame, sync=False)
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


def _have_chunk(d: Path, sha: str) -> bool:
    p = d / f"{sha}.zst"
    return p.exists() and hashlib.sha256(p.read_bytes()).hexdigest() == sha


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
    idx: PackIndex = files["index"]
    need = {(o[0], o[1]) for o in idx.objects if not repo.has(o[0], o[1])}
    metas: dict[tuple[str, str], bytes] = {}
    if plan.method == "pack":
        with open(files["pack"], "rb") as fh:
            for n, c in track(list(enumerate(idx.chunks)), f"import {info.commit}",
                              unit="chunks"):
                fh.seek(c.offset)
                import_chunk(repo, idx, n, fh.read(c.clen), only=need, metas=metas)
    else:
        for n in track(plan.chunks, f"import {info.commit}", unit="chunks"):
            frame = (files["chunks"] / f"{idx.chunks[n].sha256}.zst").read_bytes()
            import_chunk(repo, idx, n, frame, only=need, metas=metas)
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
