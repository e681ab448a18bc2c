"""Check out a commit as a tree of hardlinks to file objects.

Safety: the destination is created fresh; every path component is opened
relative to its parent directory fd with ``O_NOFOLLOW``, names are checked
(no ``..``, ``/`` or NUL), and only regular files, symlinks and directories
are created. A hostile tree (absolute symlinks pointing outside, ``..``
entries, device nodes) therefore cannot write outside the destination.
With ``verify=True`` every object is checked before it is linked (its seal;
re-hashed when the seal is broken, :func:`bad_objects`), so a damaged object
is refused (and quarantined); the destination is then removed again.

Speed: every directory and file is a system call or two (``mkdir``, ``link``,
the seal's ``lstat``), tens of thousands for a Debian tree: natively a second,
under emulation (QEMU's TCG) ten. The tree is read once (:class:`_Walk`), then
split into units of about equal size that several processes check and create
(:class:`_Checkout`, :func:`atoll.core.forkwork.fork_map`).

Hardlinks have limits: empty files are created, not linked (every empty
file of a tree is the same object), and a file object whose link count is
exhausted (``EMLINK``: ext4 allows 65,000) is copied with its metadata.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from atoll.core.errors import CorruptObjectError, StoreError
from atoll.core.forkwork import default_workers, fork_map
from atoll.core.fsutil import copy_data, read_xattrs
from atoll.core.progress import Step, progress
from atoll.store.objects import DirEntry, DirMeta, FileMeta
from atoll.store.repo import REPAIR_HINT, WORKERS, Repo
from atoll.store.seal import OBJECT_MTIME, ObjectStat
from atoll.store.tree import MAX_DEPTH

__all__ = ["bad_objects", "checkout", "verify_commit"]

_QUIET = Step()  # a worker process's progress: the terminal is the parent's
_WALK_THREADS = 2


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
        trees = self.trees

        def read(ids: list[str]) -> list[list[DirEntry]]:
            return [repo.read_dirtree(t) for t in ids]

        # level by level, each level in one batch per thread: a cold read waits for the
        # disk with the interpreter's lock released, so another thread parses meanwhile
        # (a task per dirtree would cost more than it saves under emulation)
        level = [self.commit.tree]
        with ThreadPoolExecutor(_WALK_THREADS) as pool:
            while level:
                todo = [t for t in dict.fromkeys(level) if t not in trees]
                batches = [todo[i::_WALK_THREADS] for i in range(_WALK_THREADS)]
                for ids, parsed in zip(batches, pool.map(read, batches), strict=True):
                    trees.update(zip(ids, parsed, strict=True))
                level = [e.id for t in todo for e in trees[t] if e.is_dir]

    def files(self) -> list[str]:
        """The ids of every file object, sorted (the store's order on disk)."""
        return sorted({e.id for entries in self.trees.values() for e in entries
                       if not e.is_dir})


def _unsealed(repo: Repo, oids: list[str], objects_fd: int,
              stats: dict[str, os.stat_result | ObjectStat]) -> list[str]:
    """The seal check (:meth:`Repo.sealed_stat`, relative to the open ``objects/``):
    the ``lstat`` of each sealed object goes to ``stats`` (for the link); returns the
    others, to re-hash."""
    unsealed = []
    for oid in oids:
        st = repo.sealed_stat(oid, objects_fd)
        if st is None:
            unsealed.append(oid)
        else:
            stats[oid] = st
    return unsealed


def _damaged(repo: Repo, oid: str) -> str:
    """Quarantine a file object found damaged; its ``"file <id>"``."""
    repo.quarantine(oid, "file", "content does not match its id")
    return f"file {oid}"


def _bad_files(repo: Repo, walk: _Walk, *, full: bool) -> list[str]:
    """The file objects of ``walk`` found damaged or missing (``"file <id>"``; each is
    quarantined). A sealed object (:meth:`Repo.is_sealed`) is taken as whole without
    reading it; the others (or all, with ``full``) are re-hashed, on ``WORKERS``
    threads (hashing releases the GIL; a seal check is one ``lstat``, cheaper in
    this thread than handed to a pool)."""
    files = walk.files()
    if not full:
        objects = _Objects(os.fspath(repo.objects))
        try:
            files = _unsealed(repo, files, objects.fd, walk.stats)
        finally:
            os.close(objects.fd)
    bad: list[str] = []
    if not files:
        return bad
    with ThreadPoolExecutor(WORKERS) as pool, \
            progress(f"verify {walk.id[:12]}", len(files), unit="files") as step:
        for oid, ok in zip(files, pool.map(repo.reverify, files, chunksize=64), strict=True):
            step.advance()
            if not ok:
                bad.append(_damaged(repo, oid))
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
        f"commit {commit[:12]}: {len(bad)} damaged or missing object(s), the damaged ones "
        "moved to quarantine; nothing was changed",
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


def checkout(repo: Repo, commit: str, dest: Path, *, verify: bool = True,
             workers: int | None = None) -> None:
    """Materialise ``commit`` at ``dest`` (which must not exist) as hardlinks.

    Holds the repository lock (shared), so gc cannot remove objects meanwhile. The
    tree is split into units of about equal size (whole subtrees, or the files of a
    large directory), checked and created by ``workers`` processes
    (:func:`atoll.core.forkwork.fork_map`; default: one per CPU, at most four). Each
    unit's file objects are checked (``verify``) before any of them is linked; on any
    error ``dest`` is removed again, so it exists only complete.

    Progress: one step counting the files; while workers run it counts this process's
    share, and the workers' when they end.

    Raises:
        FileExistsError: ``dest`` exists.
        StoreError: the tree is unsafe (too deep, an object that is not a regular file
            or symlink); with ``verify=False``, a dirtree or the commit is missing or
            damaged.
        CorruptObjectError: an object is missing, or ``verify`` found one damaged
            (each is quarantined); all of them are named, unless another error (a full
            disk) ended the checkout first.
        OSError: from the filesystem (ENOSPC: a full disk), with its errno.
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
            os.mkdir(dest, 0o700)
            try:
                _Checkout(repo, walk, objects, verify=verify).run(
                    dest, workers or default_workers())
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                raise
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


class _Unit(NamedTuple):
    """A part of a checkout: the subtree ``entry`` created in ``dir_fd``, or (``entry``
    None) the files of the dirtree ``tree`` in ``dir_fd``, a directory already made."""

    size: int  # entries: what orders the units, largest first
    dir_fd: int
    tree: str
    depth: int  # of ``dir_fd``'s entries (the root's: 1)
    entry: DirEntry | None


class _Checkout:
    """One checkout, split into units that the processes of
    :func:`~atoll.core.forkwork.fork_map` take from one queue. Each process keeps what
    it found (damaged or missing objects) and how many files it linked, for
    :meth:`run` to gather."""

    MAX_SKELETON = 256  # directories the planner makes itself (each stays open meanwhile)

    def __init__(self, repo: Repo, walk: _Walk, objects: _Objects, *, verify: bool) -> None:
        self.repo, self.walk, self.objects, self.verify = repo, walk, objects, verify
        self.sizes: dict[str, tuple[int, int]] = {}  # dirtree id -> (entries, files)
        self.bad: list[str] = []
        self.linked = 0
        self.pid = os.getpid()
        self.step: Step = _QUIET  # this process's progress (run() sets it)

    def run(self, dest: Path, workers: int) -> None:
        root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        skeleton: list[tuple[int, DirMeta]] = [(root_fd, self.walk.commit.root)]
        try:
            total, nfiles = self._size(self.walk.commit.tree, 1)
            limit = max(512, total // (workers * 8))
            units: list[_Unit] = []
            self._plan(root_fd, self.walk.commit.tree, 1, limit, units, skeleton)
            units.sort(key=lambda u: -u.size)
            with progress(f"checkout {self.walk.id[:12]}", nfiles, unit="files") as self.step:
                results = fork_map(
                    len(units), lambda i: self._unit(units[i]),
                    lambda: {"bad": self.bad, "linked": self.linked},
                    workers=workers if nfiles >= 1024 else 1,
                    keep_fds=[self.objects.fd, *(fd for fd, _ in skeleton)])
                for r in results[1:]:
                    self.step.advance(r["linked"])
                bad = sorted({b for r in results for b in r["bad"]})
                if bad:
                    raise _corrupt(self.walk.id, bad)
            for fd, meta in reversed(skeleton):  # the deepest first, the root last
                _apply_dirmeta(fd, meta)
        finally:
            for fd, _ in skeleton:
                os.close(fd)

    def _size(self, tree: str, depth: int) -> tuple[int, int]:
        """(entries, files) under ``tree``, all levels, each place a subtree appears
        counted."""
        if depth > MAX_DEPTH:
            raise _too_deep(tree)
        n = self.sizes.get(tree)
        if n is None:
            entries = files = 0
            for e in self.walk.trees[tree]:
                entries += 1
                if e.is_dir:
                    sub = self._size(e.id, depth + 1)
                    entries, files = entries + sub[0], files + sub[1]
                else:
                    files += 1
            n = self.sizes[tree] = (entries, files)
        return n

    def _plan(self, fd: int, tree: str, depth: int, limit: int, units: list[_Unit],
              skeleton: list[tuple[int, DirMeta]]) -> None:
        """Split the directory ``fd`` (of ``tree``): a subtree of ``limit`` entries or
        fewer is a unit; a larger one is made here and split in turn; the directory's
        own files are one unit."""
        entries = self.walk.trees[tree]
        nfiles = sum(1 for e in entries if not e.is_dir)
        if nfiles:
            units.append(_Unit(nfiles, fd, tree, depth, None))
        for e in entries:
            if not e.is_dir:
                continue
            assert e.meta is not None
            size = self.sizes[e.id][0]
            if size <= limit or len(skeleton) >= self.MAX_SKELETON:
                units.append(_Unit(1 + size, fd, tree, depth, e))
                continue
            sub = _make_dir(e, fd)
            skeleton.append((sub, e.meta))
            self._plan(sub, e.id, depth + 1, limit, units, skeleton)

    def _unit(self, unit: _Unit) -> None:
        if os.getpid() != self.pid:  # a worker process: the terminal is the parent's
            self.step = _QUIET
        walk = self.walk
        if unit.entry is None:
            files = {e.id for e in walk.trees[unit.tree] if not e.is_dir}
        else:
            files, seen = set(), {unit.entry.id}
            stack = [unit.entry.id]
            while stack:
                for e in walk.trees[stack.pop()]:
                    if not e.is_dir:
                        files.add(e.id)
                    elif e.id not in seen:  # a subtree repeated: its files once
                        seen.add(e.id)
                        stack.append(e.id)
        if self.verify:
            bad = self._check(sorted(files))
            if bad:
                self.bad.extend(bad)
        if self.bad:  # once something is wrong, only check (every damaged one is named)
            return
        if unit.entry is None:
            self._fill(unit.tree, unit.dir_fd, unit.depth, files_only=True)
            return
        self._subdir(unit.entry, unit.dir_fd, unit.depth + 1)

    def _subdir(self, entry: DirEntry, dir_fd: int, depth: int) -> None:
        """Make the directory ``entry`` in ``dir_fd``, fill it (its entries at ``depth``),
        then give it its metadata."""
        assert entry.meta is not None
        fd = _make_dir(entry, dir_fd)
        try:
            self._fill(entry.id, fd, depth)
            _apply_dirmeta(fd, entry.meta)
        finally:
            os.close(fd)

    def _check(self, files: list[str]) -> list[str]:
        """The seal check of ``files`` (:meth:`Repo.sealed_stat`; the ``lstat`` kept for
        the link); an unsealed one is re-hashed. Returns the damaged ones
        (``"file <id>"``), quarantined."""
        repo, stats = self.repo, self.walk.stats
        todo = [oid for oid in files if oid not in stats]  # not checked in an earlier unit
        return [_damaged(repo, oid) for oid in _unsealed(repo, todo, self.objects.fd, stats)
                if not repo.reverify(oid)]

    def _fill(self, tree: str, dir_fd: int, depth: int, *, files_only: bool = False) -> None:
        """Create the entries of ``tree`` in the directory ``dir_fd`` (its files only,
        with ``files_only``)."""
        if depth > MAX_DEPTH:
            raise _too_deep(tree)
        stats, objects, step = self.walk.stats, self.objects, self.step
        for entry in self.walk.trees[tree]:
            name = entry.name  # checked when the dirtree was parsed (parse_dirtree)
            if entry.is_dir:
                if not files_only:
                    self._subdir(entry, dir_fd, depth + 1)
                continue
            rel = f"{entry.id[:2]}/{entry.id[2:]}.file"
            try:
                st = stats.get(entry.id) or os.lstat(rel, dir_fd=objects.fd)
            except FileNotFoundError:
                self.bad.append(f"file {entry.id}: missing")
                return
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise StoreError(f"file object {entry.id} is not a regular file or symlink")
            if stat.S_ISREG(st.st_mode) and st.st_size == 0:
                # every empty file is one object
                _copy_object(f"{objects.path}/{rel}", name, dir_fd, st)
            else:
                try:
                    os.link(rel, name, src_dir_fd=objects.fd, dst_dir_fd=dir_fd,
                            follow_symlinks=False)
                except FileNotFoundError:  # another worker found it damaged
                    self.bad.append(f"file {entry.id}: missing")
                    return
                except OSError as exc:
                    if exc.errno != errno.EMLINK:
                        raise
                    _copy_object(f"{objects.path}/{rel}", name, dir_fd, st)
            step.advance()
            self.linked += 1


def _make_dir(entry: DirEntry, dir_fd: int) -> int:
    """Create the directory ``entry`` in ``dir_fd`` (writable until filled,
    :func:`_dir_mode`); returns it, open."""
    assert entry.meta is not None
    name = entry.name  # checked when the dirtree was parsed (parse_dirtree)
    os.mkdir(name, _dir_mode(entry.meta), dir_fd=dir_fd)
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)


def _too_deep(tree: str) -> StoreError:
    return StoreError(f"dirtree {tree}: directories nested deeper than {MAX_DEPTH} levels",
                      resolution="atoll refuses such trees at commit; this commit was made "
                      "elsewhere")
