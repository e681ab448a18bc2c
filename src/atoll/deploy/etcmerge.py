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
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from atoll.core.errors import HostStateError
from atoll.core.fsutil import copy_data, open_beneath, read_xattrs
from atoll.core.text import printable

log = logging.getLogger("atoll.deploy")
_T = TypeVar("_T")

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
    # depth first, one open directory per level: each opened relative to its parent,
    # never through a symlink, a FIFO or a device (a user who renames entries of a
    # directory they own cannot steer root's reads elsewhere, nor block them)
    stack: list[tuple[int, str, Iterator[str]]] = []
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        stack.append((top, "", iter(sorted(os.listdir(top)))))
    except BaseException:
        os.close(top)
        raise
    try:
        while stack:
            dir_fd, prefix, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(dir_fd)
                stack.pop()
                continue
            rel = prefix + name
            try:
                sig, sub = _again(rel, _look, dir_fd, name, digests)
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone meanwhile (a directory with all it held): as deleted
            if sig is None:
                continue
            out[rel] = sig
            if sub is None:
                continue
            if len(stack) >= MAX_DEPTH:
                os.close(sub)
                log.warning("/etc merge: %s: what is below it (more than %d levels deep) "
                            "is not carried over", printable(rel), MAX_DEPTH)
                continue
            try:
                listing = iter(sorted(os.listdir(sub)))
            except BaseException:
                os.close(sub)
                raise
            stack.append((sub, rel + "/", listing))
    finally:
        for dir_fd, _p, _n in stack:
            os.close(dir_fd)
    return out


class _KindChanged(Exception):
    """An entry is of another kind than a moment ago (a service replaced a symlink by a
    file, a directory by a symlink...): look at it again."""


_LOOKS = 3
MAX_DEPTH = 64  # directory levels of /etc the merge carries over


def _again(rel: str, fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)``, looked at again (up to :data:`_LOOKS` times) while the entry
    ``rel`` keeps changing kind. A file that is there is never taken for deleted.

    Raises:
        HostStateError: it changed kind at every look.
    """
    for _ in range(_LOOKS):
        with contextlib.suppress(_KindChanged):
            return fn(*args)
    raise HostStateError(f"/etc merge: {printable(rel)} kept changing while it was read",
                         resolution="run the command again once the service that "
                         "rewrites it is done")


def _look(dir_fd: int, name: str, digests: Digests | None) -> tuple[Sig | None, int | None]:
    """The entry's signature and, for a directory, its descriptor (to walk into)."""
    sig = _sig(dir_fd, name, digests)
    if sig is None or sig.kind != "d":
        return sig, None
    sub = _open_dir(dir_fd, name)
    if os.fstat(sub).st_nlink == 0:  # removed since it was listed
        os.close(sub)
        raise FileNotFoundError(errno.ENOENT, "removed", name)
    return sig, sub


def _open_dir(dir_fd: int, name: str) -> int:
    """The directory ``name`` of ``dir_fd``, opened without following a symlink or
    opening anything else (``O_DIRECTORY``: a FIFO or device swapped in is refused
    before it is opened).

    Raises:
        FileNotFoundError: it is gone.
        _KindChanged: it is no longer a directory.
    """
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK
                       | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise FileNotFoundError(errno.ENOENT, "gone", name) from None
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise _KindChanged(name) from None
        raise


def _readlink(dir_fd: int, name: str) -> str:
    """Raises FileNotFoundError (``name`` is gone), _KindChanged (no longer a symlink)."""
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise FileNotFoundError(errno.ENOENT, "gone", name) from None
        if exc.errno == errno.EINVAL:
            raise _KindChanged(name) from None
        raise


def _proc_fd(fd: int) -> str:
    """``/proc/self/fd/FD``, the way to an inode an ``O_PATH`` descriptor holds.

    Raises:
        HostStateError: /proc is not mounted (never taken for a deleted entry).
    """
    if not os.path.isdir("/proc/self/fd"):
        raise HostStateError("/etc merge: /proc is not mounted",
                             resolution="mount it (`mount -t proc proc /proc`)")
    return f"/proc/self/fd/{fd}"


def _sig(dir_fd: int, name: str, digests: Digests | None) -> Sig | None:
    st = os.lstat(name, dir_fd=dir_fd)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        return Sig("d", mode, st.st_uid, st.st_gid, "")
    if stat.S_ISLNK(st.st_mode):
        return Sig("l", 0o777, st.st_uid, st.st_gid, _readlink(dir_fd, name))
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
        FileNotFoundError: it is gone.
        _KindChanged: it is not a regular file any more.
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
            raise _KindChanged(name)
        fd = os.open(_proc_fd(path_fd), os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        return fd, st
    finally:
        os.close(path_fd)


def _hash_at(dir_fd: int, name: str) -> tuple[os.stat_result, str]:
    """(fstat, content sha256) of the regular file ``name`` in ``dir_fd``
    (:func:`_open_file`).

    Raises:
        FileNotFoundError: it is gone.
        _KindChanged: it is no longer a regular file.
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


def _copy_one(src_fd: int, dest_fd: int, rel: str) -> None:
    """Copy one path as it is now (a path the host deleted meanwhile is skipped).

    Both sides are reached relative to directory descriptors opened below their roots
    (``src_fd``, ``dest_fd``) without following a symlink on the way
    (:func:`atoll.core.fsutil.open_beneath`): a user who swaps an entry of a directory
    they own for a symlink gets nothing copied from elsewhere, and nothing written
    through a symlink the merge itself copied (its children are skipped). Files are
    created 0600 and get their mode once complete: a copy of /etc/shadow is never
    readable by others, even for a moment.
    """
    parent_rel, _, name = rel.rpartition("/")
    try:
        spfd = _open_below(src_fd, parent_rel)
    except FileNotFoundError:
        return  # its directory left the source since the scan: as deleted, with it
    try:
        try:
            dpfd = _open_below(dest_fd, parent_rel)
        except FileNotFoundError:
            log.warning("/etc merge: %s skipped: its directory was not copied as one (the "
                        "host changed it meanwhile)", printable(rel))
            return
        try:
            _again(rel, _copy_entry, spfd, name, dpfd)
        except (FileNotFoundError, NotADirectoryError):
            # the host removed it since the scan: as deleted
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dpfd)
        finally:
            os.close(dpfd)
    finally:
        os.close(spfd)


def _open_below(root_fd: int, rel: str) -> int:
    """The directory ``rel`` below ``root_fd`` (``root_fd`` itself, duplicated, for
    ""), opened without following a symlink on the way.

    Raises:
        FileNotFoundError: it is gone, or a symlink (or a non-directory) is on the way.
    """
    if not rel:
        return os.dup(root_fd)
    try:
        return open_beneath(root_fd, rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK
                            | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV):
            raise FileNotFoundError(errno.ENOENT, "gone, or behind a symlink", rel) from None
        raise


def _link_xattrs(link_fd: int) -> dict[str, bytes]:
    """The xattrs of the symlink behind the ``O_PATH`` descriptor ``link_fd``: its link
    in /proc, followed, leads to the symlink itself (not beyond it; not followed, to
    the /proc entry)."""
    return read_xattrs(_proc_fd(link_fd), follow_symlinks=True)


def _copy_entry(src_dir: int, name: str, dest_dir: int) -> None:
    """Copy the entry ``name`` of the directory ``src_dir`` into ``dest_dir`` (where it
    does not exist): a directory, a regular file or a symlink, with its owner, mode
    and xattrs read from the entry itself (never through a symlink); anything else is
    skipped.

    Raises:
        FileNotFoundError: it is gone.
        _KindChanged: it is of another kind than a moment ago (nothing was created).
    """
    st = os.lstat(name, dir_fd=src_dir)
    if stat.S_ISLNK(st.st_mode):
        link_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
        try:
            lst = os.fstat(link_fd)
            if not stat.S_ISLNK(lst.st_mode):
                raise _KindChanged(name)
            target = _readlink(link_fd, "")  # this very link: readlinkat(fd, "")
            xattrs = _link_xattrs(link_fd)
        finally:
            os.close(link_fd)
        os.symlink(target, name, dir_fd=dest_dir)
        os.chown(name, lst.st_uid, lst.st_gid, dir_fd=dest_dir, follow_symlinks=False)
        if xattrs:
            made = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dest_dir)
            try:
                for k, v in xattrs.items():
                    os.setxattr(_proc_fd(made), k, v)
            finally:
                os.close(made)
        return
    if stat.S_ISDIR(st.st_mode):
        sfd = _open_dir(src_dir, name)
        sst = os.fstat(sfd)
    elif stat.S_ISREG(st.st_mode):
        sfd, sst = _open_file(src_dir, name)
    else:
        return
    try:
        if stat.S_ISDIR(sst.st_mode):
            os.mkdir(name, 0o700, dir_fd=dest_dir)
            dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=dest_dir)
        else:
            dfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600, dir_fd=dest_dir)
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
    sources = {p: new_root for p in plan.take_new} | {p: cur_root for p in plan.keep_current}
    fds: dict[Path, int] = {}
    dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for root in set(sources.values()):
            fds[root] = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for rel in sorted(sources):  # a parent sorts before its children
            _copy_one(fds[sources[rel]], dest_fd, rel)
    finally:
        for fd in fds.values():
            os.close(fd)
        os.close(dest_fd)
    st = os.lstat(new_root) if new_root.is_dir() else None
    if st is not None:
        os.chown(dest, st.st_uid, st.st_gid)
        os.chmod(dest, stat.S_IMODE(st.st_mode))
    else:
        os.chmod(dest, 0o755)
