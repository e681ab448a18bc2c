"""Check out a commit as a tree of hardlinks to file objects.

Safety: the destination is created fresh; every path component is opened
relative to its parent directory fd with ``O_NOFOLLOW``, names are checked
(no ``..``, ``/`` or NUL), and only regular files, symlinks and directories
are created. A hostile tree (absolute symlinks pointing outside, ``..``
entries, device nodes) therefore cannot write outside the destination.
With ``verify=True`` every file object is re-hashed first (in parallel), so a
corrupt object is refused before anything is created.
"""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from atoll.core.errors import CorruptObjectError, StoreError
from atoll.core.log import Progress
from atoll.store.objects import DirMeta, check_name
from atoll.store.repo import WORKERS, Repo

__all__ = ["checkout", "verify_commit"]


def verify_commit(repo: Repo, commit: str) -> None:
    """Re-hash every object of ``commit``.

    Raises:
        CorruptObjectError: naming each corrupt or missing object.
    """
    objs = repo.reachable(commit, parents=False)
    files = sorted(oid for oid, kind in objs if kind == "file")
    bad: list[str] = []
    for oid, kind in objs:
        if kind != "file":
            try:
                data = repo.read_meta_object(oid, kind)
            except StoreError:
                bad.append(f"{kind} {oid}")
                continue
            if hashlib.sha256(data).hexdigest() != oid:
                bad.append(f"{kind} {oid}")
    progress = Progress("verify objects", len(files))
    with ThreadPoolExecutor(WORKERS) as pool:
        for oid, ok in zip(files, pool.map(repo.verify_file, files, chunksize=64), strict=True):
            progress.advance()
            if not ok:
                bad.append(f"file {oid}")
    if bad:
        raise CorruptObjectError(
            f"commit {commit[:12]}: {len(bad)} corrupt or missing object(s)",
            details="\n".join(sorted(bad)[:50]),
            resolution="run `atoll store fsck` and pull or re-compose the commit",
        )


def _apply_dirmeta(fd: int, meta: DirMeta) -> None:
    os.fchown(fd, meta.uid, meta.gid)
    os.fchmod(fd, meta.mode)
    for k, v in meta.xattrs.items():
        os.setxattr(fd, k, v)


def checkout(repo: Repo, commit: str, dest: Path, *, verify: bool = True) -> None:
    """Materialise ``commit`` at ``dest`` (which must not exist) as hardlinks.

    Raises:
        StoreError: ``dest`` exists, an object is missing, or the tree is unsafe.
        CorruptObjectError: ``verify`` found a corrupt object.
    """
    dest = Path(dest)
    if verify:
        verify_commit(repo, commit)
    c = repo.read_commit(commit)
    os.mkdir(dest, 0o700)
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    objects = os.fspath(repo.objects)
    try:
        _checkout_tree(repo, objects, c.tree, root_fd)
        _apply_dirmeta(root_fd, c.root)
    finally:
        os.close(root_fd)


def _checkout_tree(repo: Repo, objects: str, tree: str, dir_fd: int) -> None:
    for entry in repo.read_dirtree(tree):
        name = check_name(entry.name)
        if entry.is_dir:
            assert entry.meta is not None
            os.mkdir(name, 0o700, dir_fd=dir_fd)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                _checkout_tree(repo, objects, entry.id, fd)
                _apply_dirmeta(fd, entry.meta)
            finally:
                os.close(fd)
        else:
            src = f"{objects}/{entry.id[:2]}/{entry.id[2:]}.file"
            try:
                st = os.lstat(src)
            except FileNotFoundError:
                raise StoreError(f"file object {entry.id} is missing",
                                 resolution="run `atoll store fsck`") from None
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise StoreError(f"file object {entry.id} is not a regular file or symlink")
            os.link(src, name, dst_dir_fd=dir_fd, follow_symlinks=False)


