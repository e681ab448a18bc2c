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
    # fwalk: every directory is opened once (never through a symlink, which it does not
    # descend into) and its entries read relative to it: a user who renames entries of
    # a directory they own cannot steer root's reads elsewhere
    for dirpath, dirnames, filenames, dir_fd in os.fwalk(root):
        for name in dirnames + filenames:
            try:
                sig = _sig(dir_fd, name, digests)
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone meanwhile
            if sig is not None:
                out[os.path.relpath(os.path.join(dirpath, name), root)] = sig
    return out


def _sig(dir_fd: int, name: str, digests: Digests | None) -> Sig | None:
    st = os.lstat(name, dir_fd=dir_fd)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        return Sig("d", mode, st.st_uid, st.st_gid, "")
    if stat.S_ISLNK(st.st_mode):
        return Sig("l", 0o777, st.st_uid, st.st_gid, os.readlink(name, dir_fd=dir_fd))
    if stat.S_ISREG(st.st_mode):
        key = (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size, st.st_mtime_ns)
        digest = digests.get(key) if digests is not None else None
        if digest is None:
            st, digest = _hash_at(dir_fd, name)
            if digests is not None:
                digests[key] = digest
        return Sig("f", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, digest)
    return None  # sockets, fifos: runtime state, not configuration


def _open_file(dir_fd: int, name: str) -> tuple[int, os.stat_result]:
    """The regular file ``name`` in the directory ``dir_fd``, opened for reading: first
    as an ``O_PATH`` descriptor (which opens no FIFO, device or socket and breaks no
    lease), then, when its ``fstat`` shows a regular file, that very inode again
    through its ``/proc/self/fd`` link. Like any open, that waits for a lease holder
    to give way (at most the kernel's lease-break-time). (fd, fstat).

    Raises:
        FileNotFoundError: it is gone, or not a regular file any more.
        HostStateError: /proc is not mounted.
    """
    try:
        path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise FileNotFoundError(errno.ENOENT, "gone", name) from None
        raise
    try:
        st = os.fstat(path_fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(errno.ENOENT, "not a regular file any more", name)
        try:
            fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        except FileNotFoundError:
            raise HostStateError("/etc merge: /proc is not mounted",
                                 resolution="mount it (`mount -t proc proc /proc`)") from None
        return fd, st
    finally:
        os.close(path_fd)


def _hash_at(dir_fd: int, name: str) -> tuple[os.stat_result, str]:
    """(fstat, content sha256) of the regular file ``name`` in ``dir_fd``
    (:func:`_open_file`).

    Raises:
        FileNotFoundError: it is gone or no longer a regular file.
    """
    fd, st = _open_file(dir_fd, name)
    try:
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


def _copy_one(src_fd: int, dest_root: Path, rel: str, dest_real: str,
              inside: set[str]) -> None:
    """Copy one path as it is now (a path the host deleted meanwhile is skipped).

    Files are created 0600 and get their mode once complete: a copy of
    /etc/shadow is never readable by others, even for a moment. A file or directory
    is read relative to its directory, opened below ``src_fd`` (the source's root)
    without following a symlink on the way, and its owner, mode and xattrs are those of
    what was opened: a user who swaps an entry of a directory they own for a symlink
    gets nothing copied from elsewhere.

    ``inside``: the destination's directories already resolved to be inside it. Each
    is created once, before what it holds, and nobody else can replace it (the
    destination is root's alone until :func:`apply_plan` ends), so one ``realpath``
    per directory holds for all its entries.
    """
    dest = dest_root / rel
    if str(dest.parent) not in inside:
        parent = os.path.realpath(dest.parent)
        if parent != dest_real and not parent.startswith(dest_real + os.sep):
            raise HostStateError(f"/etc merge: {printable(rel)} would be written outside "
                                 "the deployment")
        inside.add(str(dest.parent))
    parent_rel, _, name = rel.rpartition("/")
    try:
        try:
            pfd = (open_beneath(src_fd, parent_rel, os.O_RDONLY | os.O_DIRECTORY)
                   if parent_rel else os.dup(src_fd))
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EXDEV):  # a symlink swapped in on the way
                raise FileNotFoundError(errno.ENOENT, "moved behind a symlink", rel) from None
            raise
        try:
            _copy_entry(pfd, name, dest)
        finally:
            os.close(pfd)
    except (FileNotFoundError, NotADirectoryError):
        # the host removed it (or its directory) since the scan: as deleted
        with contextlib.suppress(OSError):
            if os.path.lexists(dest) and not os.path.isdir(dest):
                os.unlink(dest)


def _copy_entry(dir_fd: int, name: str, dest: Path) -> None:
    """Copy the entry ``name`` of the directory ``dir_fd`` to ``dest`` (which does not
    exist): a directory, a regular file or a symlink, with its owner, mode and xattrs
    read from the entry itself (never through a symlink); anything else is skipped.

    Raises:
        FileNotFoundError: it is gone (or of another kind than a moment ago).
    """
    st = os.lstat(name, dir_fd=dir_fd)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(name, dir_fd=dir_fd)
        link_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            # the symlink's own xattrs: its O_PATH link in /proc leads to it, not beyond
            xattrs = read_xattrs(f"/proc/self/fd/{link_fd}") if stat.S_ISLNK(
                os.fstat(link_fd).st_mode) else None
        finally:
            os.close(link_fd)
        if xattrs is None:
            raise FileNotFoundError(errno.ENOENT, "of another kind now", name)
        os.symlink(target, dest)
        os.lchown(dest, st.st_uid, st.st_gid)
        for k, v in xattrs.items():
            os.setxattr(dest, k, v, follow_symlinks=False)
        return
    if stat.S_ISDIR(st.st_mode):
        try:
            sfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                raise FileNotFoundError(errno.ENOENT, "of another kind now", name) from None
            raise
        sst = os.fstat(sfd)
    elif stat.S_ISREG(st.st_mode):
        sfd, sst = _open_file(dir_fd, name)
    else:
        return
    try:
        if stat.S_ISDIR(sst.st_mode):
            os.mkdir(dest, 0o700)
            dfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        else:
            dfd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600)
        try:
            if stat.S_ISREG(sst.st_mode):
                copy_data(sfd, dfd)
            os.fchown(dfd, sst.st_uid, sst.st_gid)
            os.fchmod(dfd, stat.S_IMODE(sst.st_mode))
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
            _copy_one(fds[sources[rel]], dest, rel, dest_real, inside)
    finally:
        for fd in fds.values():
            os.close(fd)
    st = os.lstat(new_root) if new_root.is_dir() else None
    if st is not None:
        os.chown(dest, st.st_uid, st.st_gid)
        os.chmod(dest, stat.S_IMODE(st.st_mode))
    else:
        os.chmod(dest, 0o755)
