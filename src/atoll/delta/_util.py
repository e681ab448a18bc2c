"""Helpers shared by deltas and packs: object listing, file meta (de)serialisation."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

import zstandard

from atoll.core.errors import StoreError
from atoll.delta.pairing import FileInfo
from atoll.store.objects import FileMeta
from atoll.store.repo import Repo

__all__ = ["ObjectRef", "commit_files", "meta_from_json", "raw_dict", "window_log_for"]


@dataclass(frozen=True)
class ObjectRef:
    """One object of a commit, in tree order (the order packs and deltas use)."""

    id: str
    kind: str
    path: str


def meta_from_json(data: dict[str, Any]) -> FileMeta:
    """Inverse of :meth:`FileMeta.to_json`.

    Raises:
        StoreError: the meta is malformed.
    """
    try:
        kind = str(data["type"])
        if kind not in ("reg", "lnk"):
            raise ValueError(kind)
        xattrs = {str(k): base64.b64decode(v) for k, v in dict(data.get("xattrs", {})).items()}
        return FileMeta(kind, int(data["mode"]), int(data["uid"]), int(data["gid"]), xattrs)
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"malformed file meta {data!r}") from exc


def commit_objects(repo: Repo, commit: str) -> list[ObjectRef]:
    """Every object of ``commit`` once, in tree order: commit, then a depth-first walk."""
    c = repo.read_commit(commit)
    out = [ObjectRef(commit, "commit", ""), ObjectRef(c.tree, "dirtree", "")]
    seen = {(commit, "commit"), (c.tree, "dirtree")}
    for path, entry in repo.walk(c.tree):
        kind = "dirtree" if entry.is_dir else "file"
        if (entry.id, kind) in seen:
            continue
        seen.add((entry.id, kind))
        out.append(ObjectRef(entry.id, kind, path))
    return out


def commit_files(repo: Repo, commit: str) -> list[FileInfo]:
    """Every file of ``commit`` (one entry per path) with its object's size."""
    c = repo.read_commit(commit)
    out = []
    sizes: dict[str, tuple[int, bool]] = {}
    for path, entry in repo.walk(c.tree):
        if entry.is_dir:
            continue
        if entry.id not in sizes:
            st = os.lstat(repo.object_path(entry.id, "file"))
            sizes[entry.id] = (st.st_size, os.path.islink(repo.object_path(entry.id, "file")))
        size, link = sizes[entry.id]
        out.append(FileInfo(path, entry.id, size, link))
    return out


def window_log_for(size: int) -> int:
    """A zstd window large enough to reference ``size`` bytes back."""
    return max(zstandard.WINDOWLOG_MIN, min(zstandard.WINDOWLOG_MAX, max(size, 1).bit_length()))


def raw_dict(base: bytes | bytearray | memoryview) -> zstandard.ZstdCompressionDict:
    """The old file's bytes as a raw-content dictionary (zstd ``--patch-from``)."""
    return zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def check_kind(kind: str) -> str:
    if kind not in ("commit", "dirtree", "file"):
        raise StoreError(f"unknown object kind {kind!r}")
    return kind
