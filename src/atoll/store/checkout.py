"""Check out a commit as a tree of hardlinks to file objects.

Safety: the destination is created fresh; every path component is opened
relative to its parent directory fd with ``O_NOFOLLOW``, names are checked
(no ``..``, ``/`` or NUL), and only regular files, symlinks and directories
are created. A hostile tree (absolute symlinks pointing outside, ``..``
entries, device nodes) therefore cannot write outside the destination.
With ``verify=True`` every object is checked first (its seal; re-hashed when
the seal is broken, :func:`bad_objects`), so a damaged object is refused (and
quarantined) before anything is created.

Hardlinks have limits: empty files are created, not linked (every empty
file of a tree is the same object), and a file object whose link count is
exhausted (``EMLINK``: ext4 allows 65,000) is copied with its metadata.
"""

from __future__ import annotations

import errno
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from atoll.core.errors import CorruptObjectError, StoreError
from atoll.core.fsutil import copy_data, read_xattrs
from atoll.core.progress import Step, progress
from atoll.store.objects import DirEntry, DirMeta, FileMeta
from atoll.store.repo import REPAIR_HINT, WORKERS, Repo
from atoll.store.seal import OBJECT_MTIME, ObjectStat
from atoll.store.tree import MAX_DEPTH

__all__ = ["bad_objects", "checkout", "verify_commit"]


class _Walk:
    """One commit's dirtrees, each read, verified against its id and parsed once
    (``trees``: dirtree id -> its entries), and its file objects' ``lstat``s taken by
    the seal check (``stats``), for the checkout to reuse."""

    def __init__(self, repo: Repo, commit: str) -> None:
        """Raises: StoreError (a dirtree or the commit is missing), CorruptObjectError
        (one is damaged or malformed; it is quarantined)."""
        self.id = commit
        self.commit = repo.read_commit(commit)
        self.trees: dict[str, list[DirEntry]] = {}
        self.stats: dict[str, os.stat_result | ObjectStat] = {}
        stack = [self.commit.tree]
        while stack:
            t = stack.pop()
            if t in self.trees:
                continue
            self.trees[t] = entries = repo.read_dirtree(t)
            stack.extend(e.id for e in entries if e.is_dir)

    def files(self) -> list[str]:
        """The ids of every file object, sorted (the store's order on disk)."""
        return sorted({e.id for entries in self.trees.values() for e in entries
                       if not e.is_dir})


def _bad_files(repo: Repo, walk: _Walk, *, full: bool,
               objects_fd: int | None = None) -> list[str]:
    """The file objects of ``walk`` found damaged or missing (``"file <id>"``; each is
    quarantined). A sealed object (:meth:`Repo.is_sealed`) is taken as whole without
    reading it; the others (or all, with ``full``) are re-hashed, on ``WORKERS``
    threads (hashing releases the GIL; a seal check is one ``lstat``, cheaper in
    this thread than handed to a pool). ``objects_fd``: the store's ``objects/``, open
    (:meth:`Repo.sealed_stat`)."""
    files = walk.files()
    if not full:
        unsealed = []
        for oid in files:
            st = repo.sealed_stat(oid, objects_fd)
            if st is None:
                unsealed.append(oid)
            else:
                walk.stats[oid] = st
        files = unsealed
    bad: list[str] = []
    if not files:
        return bad
    with ThreadPoolExecutor(WORKERS) as pool, \
            progress(f"verify {walk.id[:12]}", len(files), unit="files") as step:
        for oid, ok in zip(files, pool.map(repo.reverify, files, chunksize=64), strict=True):
            step.advance()
            if not ok:
                bad.append(f"file {oid}")
                repo.quarantine(oid, "file", "content does not match its id")
    return bad


def bad_objects(repo: Repo, commit: str, *, full: bool = False) -> list[str]:
    """Check every object of ``commit``; quarantine and return (``"kind id"``) those
    that are damaged or missing.

    The commit and its dirtrees are read and verified against their ids (they are
    small; the first damaged or missing one ends the check: what is below it is
    unknown). A file object is re-hashed only when its seal is broken
    (:meth:`Repo.is_sealed`: it was written to since it was verified, or it predates
    sealing), or with ``full``; one found whole is sealed again.
    """
    try:
        walk = _Walk(repo, commit)
    except StoreError as exc:  # a damaged (now quarantined) or missing dirtree/commit
        return [exc.brief]
    return sorted(_bad_files(repo, walk, full=full))


def _corrupt(commit: str, bad: list[str]) -> CorruptObjectError:
    return CorruptObjectError(
        f"commit {commit[:12]}: {len(bad)} damaged or missing object(s), moved to "
        "quarantine; nothing was changed",
        details="\n".join(bad[:50]),
        resolution=REPAIR_HINT,
    )


def verify_commit(repo: Repo, commit: str) -> None:
    """Check every object of ``commit`` (:func:`bad_objects`).

    Raises:
        CorruptObjectError: naming each corrupt or missing object (the damaged ones
            are quarantined, so that the next pull or commit writes them again).
    """
    bad = bad_objects(repo, commit)
    if bad:
        raise _corrupt(commit, bad)


def _dir_mode(meta: DirMeta) -> int:
    """The mode to create ``meta``'s directory with: its permissions, writable by the
    owner until its content is in (a special or missing bit is set after)."""
    return (meta.mode & 0o777) | 0o700


def _apply_dirmeta(fd: int, meta: DirMeta) -> None:
    """Give the directory ``fd`` ``meta``'s owner, mode and xattrs, setting owner and
    mode only where they differ: ``mkdir`` with :func:`_dir_mode` already gives nearly
    every directory both (one ``fstat`` instead of an ``fchown`` and an ``fchmod``;
    under emulation each system call counts). What the directory got is read, not
    inferred: a default ACL above the destination, another thread's umask or a
    filesystem that ignores the umask cannot leave a wrong mode."""
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (meta.uid, meta.gid):
        os.fchown(fd, meta.uid, meta.gid)  # (may clear set-ID bits: the mode comes after)
        os.fchmod(fd, meta.mode)
    elif stat.S_IMODE(st.st_mode) != meta.mode:
        os.fchmod(fd, meta.mode)
    for k, v in meta.xattrs.items():
        os.setxattr(fd, k, v)


def checkout(repo: Repo, commit: str, dest: Path, *, verify: bool = True) -> None:
    """Materialise ``commit`` at ``dest`` (which must not exist) as hardlinks.

    Holds the repository lock (shared), so gc cannot remove objects meanwhile.

    Raises:
        StoreError: ``dest`` exists, an object is missing, or the tree is unsafe.
        CorruptObjectError: ``verify`` found a damaged object.
    """
    dest = Path(dest)
    with repo.lock.shared():
        try:
            walk = _Walk(repo, commit)
        except StoreError as exc:
            if not verify:
                raise
            raise _corrupt(commit, [exc.brief]) from exc
        objects = _Objects(os.fspath(repo.objects))
        try:
            if verify:
                bad = _bad_files(repo, walk, full=False, objects_fd=objects.fd)
                if bad:
                    raise _corrupt(commit, sorted(bad))
            os.mkdir(dest, 0o700)
            root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                with progress(f"checkout {commit[:12]}", unit="files") as step:
                    _checkout_tree(walk, objects, walk.commit.tree, root_fd, step)
                _apply_dirmeta(root_fd, walk.commit.root)
            finally:
                os.close(root_fd)
        finally:
            os.close(objects.fd)


class _Objects:
    """The store's ``objects/`` directory: its path, and an open descriptor that the
    links are made relative to (one path component looked up per link, not the whole
    path: it counts on a slow machine, and under emulation)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _copy_object(src: str, name: str, dir_fd: int, st: os.stat_result | ObjectStat) -> None:
    """Create ``name`` as a copy of the file object ``src`` (owner, mode, xattrs)."""
    meta = FileMeta.from_stat(st, read_xattrs(src))
    if meta.kind == "lnk":
        os.symlink(os.readlink(src), name, dir_fd=dir_fd)
        os.chown(name, meta.uid, meta.gid, dir_fd=dir_fd, follow_symlinks=False)
        path = f"/proc/self/fd/{dir_fd}/{name}"
        for k, v in meta.xattrs.items():
            os.setxattr(path, k, v, follow_symlinks=False)
        os.utime(name, (OBJECT_MTIME, OBJECT_MTIME), dir_fd=dir_fd, follow_symlinks=False)
        return
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dir_fd)
    try:
        if st.st_size:
            with open(src, "rb") as fh:
                copy_data(fh.fileno(), fd)
        os.fchown(fd, meta.uid, meta.gid)
        os.fchmod(fd, meta.mode)
        for k, v in meta.xattrs.items():
            os.setxattr(fd, k, v)
        os.utime(fd, (OBJECT_MTIME, OBJECT_MTIME))  # as the hardlinked files have
    finally:
        os.close(fd)


def _checkout_tree(walk: _Walk, objects: _Objects, tree: str, dir_fd: int, step: Step,
                   depth: int = 1) -> None:
    if depth > MAX_DEPTH:
        raise StoreError(f"dirtree {tree}: directories nested deeper than {MAX_DEPTH} levels",
                         resolution="atoll refuses such trees at commit; this commit was made "
                         "elsewhere")
    stats = walk.stats
    for entry in walk.trees[tree]:
        name = entry.name  # checked when the dirtree was parsed (parse_dirtree)
        if entry.is_dir:
            assert entry.meta is not None
            os.mkdir(name, _dir_mode(entry.meta), dir_fd=dir_fd)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                _checkout_tree(walk, objects, entry.id, fd, step, depth + 1)
                _apply_dirmeta(fd, entry.meta)
            finally:
                os.close(fd)
        else:
            step.advance()
            rel = f"{entry.id[:2]}/{entry.id[2:]}.file"
            try:
                st = stats.get(entry.id) or os.lstat(rel, dir_fd=objects.fd)
            except FileNotFoundError:
                raise StoreError(f"file object {entry.id} is missing",
                                 resolution=REPAIR_HINT) from None
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise StoreError(f"file object {entry.id} is not a regular file or symlink")
            if stat.S_ISREG(st.st_mode) and st.st_size == 0:
                # every empty file is one object
                _copy_object(f"{objects.path}/{rel}", name, dir_fd, st)
                continue
            try:
                os.link(rel, name, src_dir_fd=objects.fd, dst_dir_fd=dir_fd,
                        follow_symlinks=False)
            except OSError as exc:
                if exc.errno != errno.EMLINK:
                    raise
                _copy_object(f"{objects.path}/{rel}", name, dir_fd, st)
