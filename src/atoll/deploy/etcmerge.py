"""/etc three-way merge.

Three trees: the *old defaults* (``usr/etc`` of the deployment we merge from),
the *current* ``/etc`` of that deployment (what the host made of it), and the
*new defaults* (``usr/etc`` of the new deployment). Per path:

=====================  =====================  ===========================
host changed it?       image changed it?      result
=====================  =====================  ===========================
no                     —                      new default (or absent)
yes                    no                     host's version
yes                    yes, to the same       that version
yes                    yes, differently       host's version + **conflict**
=====================  =====================  ===========================

A conflict is never resolved silently in favour of the image: the host's file
stays, and the path is reported (deploy output, ``status``). The image's new
default remains readable in ``/usr/etc``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from atoll.core.errors import HostStateError
from atoll.core.fsutil import copy_data, open_beneath, read_xattrs
from atoll.core.text import printable

__all__ = ["Digests", "MergePlan", "Sig", "apply_plan", "plan_merge", "scan"]


@dataclass(frozen=True)
class Sig:
    """What makes two versions of a path the same."""

    kind: str  # "d", "f", "l"
    mode: int
    uid: int
    gid: int
    digest: str  # content sha256, link target, or "" for directories


Digests = dict[tuple[int, int, int, int, int], str]
"""Content digests by ``(st_dev, st_ino, st_ctime_ns, st_size, st_mtime_ns)``, shared
by the scans of the store's copies of /etc in one merge (:func:`scan`)."""


def scan(root: Path, digests: Digests | None = None) -> dict[str, Sig]:
    """Signatures of every path below ``root`` (relative, '/'-separated).

    A live /etc changes while it is read (services create and delete temp
    files): a path that vanishes between listing and reading is treated as
    deleted by the host.

    ``digests``, given to the scans of the two deployments' defaults (``usr/etc``),
    reads each of their inodes once: those are hardlinks to the same store objects
    wherever the image left a file as it was, which is most of them. Never for a live
    /etc: a service's atomic rewrites free inode numbers that the next file reuses.
    An entry is keyed by the inode and its ctime, size and mtime, so a file changed
    meanwhile is read again.
    """
    out: dict[str, Sig] = {}
    if not root.is_dir():
        return out
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                rel = os.path.relpath(p, root)
                try:
                    sig = _sig(root_fd, rel, p, digests)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # gone meanwhile
                if sig is not None:
                    out[rel] = sig
            # symlinks to directories are listed in dirnames: do not descend into them
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    finally:
        os.close(root_fd)
    return out


def _sig(root_fd: int, rel: str, p: str, digests: Digests | None) -> Sig | None:
    st = os.lstat(p)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        return Sig("d", mode, st.st_uid, st.st_gid, "")
    if stat.S_ISLNK(st.st_mode):
        return Sig("l", 0o777, st.st_uid, st.st_gid, os.readlink(p))
    if stat.S_ISREG(st.st_mode):
        key = (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size, st.st_mtime_ns)
        digest = digests.get(key) if digests is not None else None
        if digest is None:
            st, digest = _hash_beneath(root_fd, rel)
            if digests is not None:
                digests[key] = digest
        return Sig("f", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, digest)
    return None  # sockets, fifos: runtime state, not configuration


def _open_source(root_fd: int, rel: str, flags: int) -> tuple[int, os.stat_result]:
    """Open ``rel`` below ``root_fd`` as :func:`atoll.core.fsutil.open_beneath` does (no
    symlink followed on the way: a user who owns a directory of /etc may swap its
    entries meanwhile), without blocking; (fd, its fstat).

    Raises:
        FileNotFoundError: it is gone, or a symlink is now on the way.
    """
    try:
        fd = open_beneath(root_fd, rel, flags | os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV):
            raise FileNotFoundError(errno.ENOENT, "gone, or moved behind a symlink",
                                    rel) from None
        raise
    return fd, os.fstat(fd)


def _hash_beneath(root_fd: int, rel: str) -> tuple[os.stat_result, str]:
    """(fstat, content sha256) of the regular file ``rel`` below ``root_fd``, opened
    with :func:`_open_source` (a FIFO swapped in never blocks the merge).

    Raises:
        FileNotFoundError: it is gone or no longer a regular file.
    """
    fd, st = _open_source(root_fd, rel, 0)
    try:
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(errno.ENOENT, "no longer a regular file", rel)
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
        return st, h.hexdigest()
    finally:
        os.close(fd)


@dataclass(frozen=True)
class MergePlan:
    take_new: tuple[str, ...]
    keep_current: tuple[str, ...]
    conflicts: tuple[str, ...]


def plan_merge(old: dict[str, Sig], cur: dict[str, Sig], new: dict[str, Sig]) -> MergePlan:
    """Decide each path's source (pure).

    A directory the image removed stays when the host keeps something inside it;
    a path below something that is no longer a directory is dropped and reported.
    """
    chosen: dict[str, str] = {}  # path -> "new" | "cur"
    conflicts: list[str] = []
    for path in sorted(old.keys() | cur.keys() | new.keys()):
        o, c, n = old.get(path), cur.get(path), new.get(path)
        if c == o:
            src, sig = "new", n
        else:
            src, sig = "cur", c
            if n != o and c != n and not (
                c is not None and n is not None and c.kind == n.kind == "d"
            ):
                conflicts.append(path)
        if sig is not None:
            chosen[path] = src
    trees = {"new": new, "cur": cur}
    final: dict[str, str] = {}
    for path in sorted(chosen, key=lambda p: (p.count("/"), p)):
        src = chosen[path]
        parts = path.split("/")
        ok = True
        for i in range(1, len(parts)):
            anc = "/".join(parts[:i])
            if anc in final:
                if trees[final[anc]][anc].kind != "d":
                    ok = False
                    break
            else:
                final[anc] = src  # resurrect the directory from the same source
        if not ok:
            if path not in conflicts:
                conflicts.append(path)
            continue
        final[path] = src
    take_new = tuple(sorted(p for p, s in final.items() if s == "new"))
    keep = tuple(sorted(p for p, s in final.items() if s == "cur"))
    return MergePlan(take_new, keep, tuple(sorted(conflicts)))


def _copy_one(src_root: Path, src_fd: int, dest_root: Path, rel: str, dest_real: str,
              inside: set[str]) -> None:
    """Copy one path as it is now (a path the host deleted meanwhile is skipped).

    Files are created 0600 and get their mode once complete: a copy of
    /etc/shadow is never readable by others, even for a moment. A file or directory
    is read through a descriptor opened below ``src_fd`` (the source's root) without
    following a symlink on the way, and its owner, mode and xattrs are that
    descriptor's: a user who swaps an entry of a directory they own for a symlink
    gets nothing copied from elsewhere.

    ``inside``: the destination's directories already resolved to be inside it. Each
    is created once, before what it holds, and nobody else can replace it (the
    destination is root's alone until :func:`apply_plan` ends), so one ``realpath``
    per directory holds for all its entries.
    """
    src = src_root / rel
    dest = dest_root / rel
    if str(dest.parent) not in inside:
        parent = os.path.realpath(dest.parent)
        if parent != dest_real and not parent.startswith(dest_real + os.sep):
            raise HostStateError(f"/etc merge: {printable(rel)} would be written outside "
                                 "the deployment")
        inside.add(str(dest.parent))
    try:
        st = os.lstat(src)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dest)
            os.lchown(dest, st.st_uid, st.st_gid)
            for k, v in read_xattrs(src).items():
                os.setxattr(dest, k, v, follow_symlinks=False)
        elif stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            _copy_opened(src_fd, rel, dest, stat.S_IFMT(st.st_mode))
    except (FileNotFoundError, NotADirectoryError):
        # the host removed it (or its directory) since the scan: as deleted
        with contextlib.suppress(OSError):
            if os.path.lexists(dest) and not os.path.isdir(dest):
                os.unlink(dest)


def _copy_opened(src_fd: int, rel: str, dest: Path, kind: int) -> None:
    """Copy the directory or regular file ``rel`` below ``src_fd`` to ``dest`` (which
    does not exist), if it is still of ``kind`` (``stat.S_IFDIR``/``S_IFREG``).

    Raises:
        FileNotFoundError: it is gone or of another kind now (as deleted).
    """
    flags = os.O_DIRECTORY if kind == stat.S_IFDIR else 0
    sfd, st = _open_source(src_fd, rel, flags)
    try:
        if stat.S_IFMT(st.st_mode) != kind:
            raise FileNotFoundError(errno.ENOENT, "of another kind now", rel)
        if kind == stat.S_IFDIR:
            os.mkdir(dest, 0o700)
            dfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        else:
            dfd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600)
        try:
            if kind == stat.S_IFREG:
                copy_data(sfd, dfd)
            os.fchown(dfd, st.st_uid, st.st_gid)
            os.fchmod(dfd, stat.S_IMODE(st.st_mode))
            for k, v in read_xattrs(sfd).items():
                os.setxattr(dfd, k, v)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def apply_plan(plan: MergePlan, cur_root: Path, new_root: Path, dest: Path) -> None:
    """Write the merged /etc into ``dest``: an empty directory, ``0700`` and root's, so
    that no other user can reach into it while it is written (a user who owns a
    directory of /etc owns its copy too, and could otherwise swap what root is about to
    chown for a symlink). It gets the mode and owner of ``new_root`` (0755 root's
    without one) once everything is in."""
    dest_real = os.path.realpath(dest)
    sources = {p: new_root for p in plan.take_new} | {p: cur_root for p in plan.keep_current}
    inside: set[str] = set()
    fds: dict[Path, int] = {}
    try:
        for root in set(sources.values()):
            fds[root] = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for rel in sorted(sources):  # a parent sorts before its children
            root = sources[rel]
            _copy_one(root, fds[root], dest, rel, dest_real, inside)
    finally:
        for fd in fds.values():
            os.close(fd)
    st = os.lstat(new_root) if new_root.is_dir() else None
    if st is not None:
        os.chown(dest, st.st_uid, st.st_gid)
        os.chmod(dest, stat.S_IMODE(st.st_mode))
    else:
        os.chmod(dest, 0o755)
