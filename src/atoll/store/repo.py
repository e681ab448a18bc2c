"""The repository: objects, refs, and committing a directory.

On-disk layout::

    repo/
    ├── config.json                 {"version": 1, "mode": "bare"}
    ├── objects/ab/<62 hex>.file    file object: the file itself, with its mode,
    │                               owner and xattrs (a symlink is a symlink), so
    │                               checkouts are hardlinks
    ├── objects/ab/<62 hex>.dirtree canonical JSON
    ├── objects/ab/<62 hex>.commit  canonical JSON
    ├── refs/heads/<name>           a branch: commit id + newline
    ├── refs/deploy/<deployment>    kept by the deploy layer so gc keeps deployed commits
    └── tmp/                        staging; anything here is garbage after a crash

Objects are written to ``tmp/`` and renamed into place (a committed object is
read-only and never rewritten). Before a ref moves, the filesystem is synced
(``syncfs``), so a ref never points at an object that is not durable; the ref
itself is written atomically (temp, fsync, rename, fsync dir).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atoll.core import canonjson
from atoll.core.errors import CorruptObjectError, InputError, StoreError
from atoll.core.fsutil import atomic_write, fsync_dir
from atoll.core.log import Progress
from atoll.store.objects import (
    Commit,
    DirEntry,
    DirMeta,
    FileMeta,
    dirtree_bytes,
    file_hasher,
    is_object_id,
    parse_dirtree,
)

__all__ = ["KINDS", "Repo", "read_xattrs"]

KINDS = ("file", "dirtree", "commit")
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
_CHUNK = 1 << 20
WORKERS = max(2, os.cpu_count() or 2)

_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` (what OSTree does before moving a ref)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def read_xattrs(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False) if dir_fd is None else os.listxattr(
            _fd_path(dir_fd, path), follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    out = {}
    for name in names:
        p = path if dir_fd is None else _fd_path(dir_fd, path)
        out[name] = os.getxattr(p, name, follow_symlinks=False)
    return out


def _fd_path(dir_fd: int, name: str | os.PathLike[str]) -> str:
    return f"/proc/self/fd/{dir_fd}/{os.fspath(name)}"


@dataclass
class CommitStats:
    files: int = 0
    new_objects: int = 0
    bytes_written: int = 0


class Repo:
    """A content-addressed repository at ``path``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.objects = self.path / "objects"
        self.refs_dir = self.path / "refs"
        self.tmp = self.path / "tmp"

    # -- lifecycle -----------------------------------------------------

    @classmethod
    def create(cls, path: Path) -> Repo:
        repo = cls(path)
        if (repo.path / "config.json").exists():
            return repo
        repo.path.mkdir(parents=True, exist_ok=True)
        for d in (repo.objects, repo.refs_dir / "heads", repo.tmp):
            d.mkdir(parents=True, exist_ok=True)
        atomic_write(repo.path / "config.json", canonjson.dumps({"mode": "bare", "version": 1}))
        return repo

    @classmethod
    def open(cls, path: Path) -> Repo:
        repo = cls(path)
        if not (repo.path / "config.json").is_file():
            raise InputError(
                f"{path}: not an atoll repository",
                resolution="create one with `atoll store init --repo DIR` or compose into it",
            )
        repo.tmp.mkdir(exist_ok=True)
        return repo

    def clean_tmp(self, older_than: float = 0.0) -> int:
        """Remove staging leftovers (from a killed process); returns how many."""
        n = 0
        now = time.time()
        for entry in os.scandir(self.tmp):
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat(follow_symlinks=False).st_mtime < older_than:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
                n += 1
        return n

    # -- objects -------------------------------------------------------

    def object_path(self, oid: str, kind: str) -> Path:
        return self.objects / oid[:2] / f"{oid[2:]}.{kind}"

    def has(self, oid: str, kind: str) -> bool:
        return os.path.lexists(self.object_path(oid, kind))

    def _place(self, tmp: str, oid: str, kind: str) -> bool:
        dest = self.object_path(oid, kind)
        try:
            os.rename(tmp, dest)  # overwrites an identical object at worst: same content
        except FileNotFoundError:
            dest.parent.mkdir(exist_ok=True)
            os.rename(tmp, dest)
        return True

    def write_meta_object(self, data: bytes, kind: str) -> str:
        """Store a dirtree or commit object; returns its id."""
        oid = hashlib.sha256(data).hexdigest()
        if self.has(oid, kind):
            return oid
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix=f"{kind}-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        self._place(tmp, oid, kind)
        return oid

    def read_meta_object(self, oid: str, kind: str) -> bytes:
        try:
            return self.object_path(oid, kind).read_bytes()
        except FileNotFoundError:
            raise StoreError(
                f"{kind} object {oid} is missing from {self.path}",
                resolution="pull the commit again, or run `atoll store fsck`",
            ) from None

    def read_dirtree(self, oid: str) -> list[DirEntry]:
        return parse_dirtree(self.read_meta_object(oid, "dirtree"))

    def read_commit(self, oid: str) -> Commit:
        return Commit.from_bytes(self.read_meta_object(oid, "commit"))

    def write_file_object(self, src: str, st: os.stat_result, xattrs: dict[str, bytes],
                          *, link: bool = False) -> tuple[str, int]:
        """Hash and store one file or symlink; returns (id, bytes written)."""
        meta = FileMeta.from_stat(st, xattrs)
        h = file_hasher(meta)
        if meta.kind == "lnk":
            target = os.readlink(src)
            h.update(os.fsencode(target))
            oid = h.hexdigest()
            if self.has(oid, "file"):
                return oid, 0
            tmp = os.path.join(self.tmp, f"lnk-{oid}-{threading.get_ident()}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(target, tmp)
            os.lchown(tmp, meta.uid, meta.gid)
            for k, v in meta.xattrs.items():
                os.setxattr(tmp, k, v, follow_symlinks=False)
            self._place(tmp, oid, "file")
            return oid, 0
        with open(src, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        oid = h.hexdigest()
        if self.has(oid, "file"):
            return oid, 0
        tmp = os.path.join(self.tmp, f"reg-{oid}-{threading.get_ident()}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if link:
            # The caller hands over a throwaway tree (compose): hardlink, no copy.
            os.link(src, tmp)
        else:
            shutil.copyfile(src, tmp)
            os.chown(tmp, meta.uid, meta.gid)
            os.chmod(tmp, meta.mode)
            for k, v in meta.xattrs.items():
                os.setxattr(tmp, k, v)
        self._place(tmp, oid, "file")
        return oid, st.st_size

    def import_file_object(self, oid: str, meta: FileMeta, content: bytes) -> None:
        """Store a file object received from elsewhere, verifying its id first."""
        h = file_hasher(meta)
        h.update(content)
        if h.hexdigest() != oid:
            raise CorruptObjectError(f"file object {oid}: content does not match its id")
        if self.has(oid, "file"):
            return
        tmp = os.path.join(self.tmp, f"imp-{oid}-{threading.get_ident()}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if meta.kind == "lnk":
            os.symlink(os.fsdecode(content), tmp)
            os.lchown(tmp, meta.uid, meta.gid)
        else:
            with open(tmp, "wb") as fh:
                fh.write(content)
            os.chown(tmp, meta.uid, meta.gid)
            os.chmod(tmp, meta.mode)
        for k, v in meta.xattrs.items():
            os.setxattr(tmp, k, v, follow_symlinks=False)
        self._place(tmp, oid, "file")

    def file_meta(self, oid: str) -> FileMeta:
        path = self.object_path(oid, "file")
        st = os.lstat(path)
        return FileMeta.from_stat(st, read_xattrs(path))

    def read_file_content(self, oid: str) -> bytes:
        path = self.object_path(oid, "file")
        if os.path.islink(path):
            return os.fsencode(os.readlink(path))
        return path.read_bytes()

    def verify_file(self, oid: str) -> bool:
        """Re-hash one file object; True when it matches its id."""
        path = self.object_path(oid, "file")
        try:
            st = os.lstat(path)
            meta = FileMeta.from_stat(st, read_xattrs(path))
        except (OSError, StoreError):
            return False
        h = file_hasher(meta)
        if meta.kind == "lnk":
            h.update(os.fsencode(os.readlink(path)))
        else:
            with open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
        return bool(h.hexdigest() == oid)

    def iter_objects(self) -> Iterator[tuple[str, str]]:
        """Every (id, kind) in the store."""
        if not self.objects.is_dir():
            return
        for sub in sorted(os.scandir(self.objects), key=lambda e: e.name):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for entry in os.scandir(sub.path):
                stem, _, kind = entry.name.partition(".")
                if kind in KINDS:
                    yield sub.name + stem, kind

    # -- refs ----------------------------------------------------------

    @staticmethod
    def check_ref(name: str) -> str:
        if not _REF_RE.match(name) or ".." in name:
            raise InputError(f"invalid ref name {name!r}",
                             resolution="use letters, digits, '.', '_', '-' and '/' separators")
        return name

    def _ref_path(self, name: str, namespace: str = "heads") -> Path:
        return self.refs_dir / namespace / self.check_ref(name)

    def set_ref(self, name: str, commit: str | None, namespace: str = "heads") -> None:
        path = self._ref_path(name, namespace)
        if commit is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                fsync_dir(path.parent)
            return
        if not self.has(commit, "commit"):
            raise StoreError(f"cannot point ref {name} at missing commit {commit}")
        path.parent.mkdir(parents=True, exist_ok=True)
        syncfs(self.path)
        atomic_write(path, commit.encode() + b"\n")

    def refs(self, namespace: str = "heads") -> dict[str, str]:
        base = self.refs_dir / namespace
        out: dict[str, str] = {}
        if not base.is_dir():
            return out
        for dirpath, _, files in os.walk(base):
            for f in files:
                if f.startswith("."):
                    continue
                p = Path(dirpath) / f
                out[str(p.relative_to(base))] = p.read_text().strip()
        return dict(sorted(out.items()))

    def all_refs(self) -> dict[str, str]:
        out = {}
        if self.refs_dir.is_dir():
            for ns in sorted(os.listdir(self.refs_dir)):
                for name, oid in self.refs(ns).items():
                    out[f"{ns}/{name}"] = oid
        return out

    def resolve(self, rev: str) -> str:
        """A ref name, a full commit id or a unique prefix (>= 8) -> commit id."""
        heads = self.refs("heads")
        if rev in heads:
            return heads[rev]
        if is_object_id(rev) and self.has(rev, "commit"):
            return rev
        if len(rev) >= 8 and all(c in "0123456789abcdef" for c in rev):
            matches = [oid for oid, kind in self._iter_prefix(rev) if kind == "commit"]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InputError(f"{rev}: ambiguous commit prefix")
        raise InputError(f"{rev}: no such ref or commit in {self.path}",
                         resolution="list them with `atoll store refs`")

    def _iter_prefix(self, prefix: str) -> Iterator[tuple[str, str]]:
        sub = self.objects / prefix[:2]
        if not sub.is_dir():
            return
        for name in os.listdir(sub):
            stem, _, kind = name.partition(".")
            if (prefix[:2] + stem).startswith(prefix):
                yield prefix[:2] + stem, kind

    # -- commit a directory ----------------------------------------------

    def commit_dir(
        self,
        src: Path,
        *,
        ref: str | None = None,
        parent: str | None = None,
        version: str = "",
        subject: str = "",
        timestamp: int | None = None,
        manifest: list[dict[str, str]] | None = None,
        metadata: dict[str, Any] | None = None,
        link: bool = False,
        skip: frozenset[str] = frozenset(),
    ) -> str:
        """Commit the tree at ``src``; returns the commit id.

        Args:
            ref: move this ref to the new commit (its old target becomes the parent).
            link: hardlink files into the store instead of copying (``src`` is throwaway).
            skip: relative paths whose *contents* are not committed (kept as empty dirs).

        Raises:
            StoreError: a device node, socket or fifo is in the tree.
        """
        src = Path(src)
        if ref is not None:
            self.check_ref(ref)
            if parent is None:
                parent = self.refs().get(ref)
        self.clean_tmp(older_than=3600)
        files: list[tuple[str, os.stat_result]] = []
        dirs: list[str] = []
        for dirpath, dirnames, filenames in os.walk(src):
            rel = os.path.relpath(dirpath, src)
            rel = "" if rel == "." else rel
            dirs.append(rel)
            if rel in skip:
                dirnames[:] = []
                continue
            for name in dirnames[:]:
                p = os.path.join(dirpath, name)
                if os.path.islink(p):  # os.walk lists symlinks to dirs as dirs
                    dirnames.remove(name)
                    filenames.append(name)
            for name in filenames:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    raise StoreError(
                        f"{os.path.join(rel, name)}: special file (device node, socket or fifo)",
                        resolution="atoll images hold regular files, symlinks and directories; "
                        "device nodes are created at boot by devtmpfs",
                    )
                files.append((os.path.join(rel, name) if rel else name, st))
        progress = Progress(f"commit {src.name or src}", len(files))
        ids: dict[str, str] = {}

        def one(item: tuple[str, os.stat_result]) -> tuple[str, str]:
            relpath, st = item
            p = os.path.join(src, relpath)
            oid, _ = self.write_file_object(p, st, read_xattrs(p), link=link)
            return relpath, oid

        with ThreadPoolExecutor(WORKERS) as pool:
            for relpath, oid in pool.map(one, files, chunksize=64):
                ids[relpath] = oid
                progress.advance()
        progress.finish()
        # Build dirtrees bottom-up.
        children: dict[str, list[DirEntry]] = {d: [] for d in dirs}
        for relpath, oid in ids.items():
            parent_dir, _, name = relpath.rpartition("/")
            children[parent_dir].append(DirEntry(name, False, oid))
        tree_ids: dict[str, str] = {}
        metas: dict[str, DirMeta] = {}
        for d in sorted(dirs, key=lambda x: x.count("/") if x else -1, reverse=True):
            p = os.path.join(src, d) if d else os.fspath(src)
            st = os.lstat(p)
            metas[d] = DirMeta(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, read_xattrs(p))
            entries = sorted(children[d], key=lambda e: e.name)
            tree_ids[d] = self.write_meta_object(dirtree_bytes(entries), "dirtree")
            if d:
                parent_dir, _, name = d.rpartition("/")
                children[parent_dir].append(DirEntry(name, True, tree_ids[d], metas[d]))
        commit = Commit(
            tree=tree_ids[""],
            root=metas[""],
            parent=parent,
            version=version,
            timestamp=int(time.time()) if timestamp is None else timestamp,
            subject=subject,
            manifest=tuple(manifest or ()),
            metadata=metadata or {},
        )
        cid = self.write_meta_object(commit.to_bytes(), "commit")
        if ref is not None:
            self.set_ref(ref, cid)
        else:
            syncfs(self.path)
        return cid

    # -- local pull ------------------------------------------------------

    def pull_local(self, other: Repo, commit: str) -> int:
        """Import ``commit`` and its objects from another local repo; returns objects copied.

        Objects are hardlinked when both repos share a filesystem, else copied
        with their metadata. Dirtrees and the commit come last, so a partial
        import never makes the commit look complete.
        """
        needed = other.reachable(commit, parents=False)
        copied = 0
        files = [oid for oid, kind in needed if kind == "file" and not self.has(oid, "file")]

        def one(oid: str) -> None:
            src = os.fspath(other.object_path(oid, "file"))
            tmp = os.path.join(self.tmp, f"pull-{oid}-{threading.get_ident()}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            try:
                os.link(src, tmp, follow_symlinks=False)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                st = os.lstat(src)
                meta = FileMeta.from_stat(st, read_xattrs(src))
                self.import_file_object(oid, meta, other.read_file_content(oid))
                return
            self._place(tmp, oid, "file")

        with ThreadPoolExecutor(WORKERS) as pool:
            for _ in pool.map(one, files, chunksize=64):
                copied += 1
        for kind in ("dirtree", "commit"):
            for oid, k in needed:
                if k == kind and not self.has(oid, kind):
                    self.write_meta_object(other.read_meta_object(oid, kind), kind)
                    copied += 1
        syncfs(self.path)
        return copied

    # -- walking -------------------------------------------------------

    def walk(self, tree: str, prefix: str = "") -> Iterator[tuple[str, DirEntry]]:
        """Yield (path, entry) for every entry below dirtree ``tree``, depth first."""
        for entry in self.read_dirtree(tree):
            path = f"{prefix}{entry.name}"
            yield path, entry
            if entry.is_dir:
                yield from self.walk(entry.id, path + "/")

    def reachable(self, commit: str, *, parents: bool = True) -> set[tuple[str, str]]:
        """Every (id, kind) needed for ``commit`` (and its parents if asked and present)."""
        seen: set[tuple[str, str]] = set()
        trees_done: set[str] = set()
        cid: str | None = commit
        while cid and self.has(cid, "commit"):
            seen.add((cid, "commit"))
            c = self.read_commit(cid)
            stack = [c.tree]
            while stack:
                t = stack.pop()
                if t in trees_done:
                    continue
                trees_done.add(t)
                seen.add((t, "dirtree"))
                for e in self.read_dirtree(t):
                    if e.is_dir:
                        stack.append(e.id)
                    else:
                        seen.add((e.id, "file"))
            cid = c.parent if parents else None
        return seen
