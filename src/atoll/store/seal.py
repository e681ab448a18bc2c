"""Sealing file objects: verified once, when they enter the store, then trusted.

Every way into the store hashes an object's content as it is written (commit,
pull, delta and pack import), so an object in ``objects/`` matched its id when
it got there. Two marks then say "not changed since":

* **The seal mtime**: 0 seconds (OSTree's canonical mtime) and a nanosecond part
  derived from the object's id, mode, owner and group (:func:`seal_mtime_ns`). A
  file object is given it once its content is verified; writing to it (through
  any hardlink: a deployment's ``/usr`` when it is not mounted read-only) sets the
  mtime to the time of the write, and a copy that preserves timestamps from
  another checked-out file (``cp -p``) or a ``chmod``/``chown`` leaves an mtime
  that does not match the object. Such an object is re-hashed before it is used.
  This catches accidents and torn edits, not an attacker who sets the mtime.
* **fs-verity**, where the filesystem supports it (ext4 with the ``verity``
  feature, on a kernel built with ``CONFIG_FS_VERITY``; atoll's disk images
  enable the feature). A sealed file cannot be opened for writing at all, and
  the kernel checks every page it reads against the file's Merkle tree: content
  changed underneath the filesystem (bit rot, an offline edit of the disk) gives
  ``EIO`` at read time instead of wrong bytes.

Source: the fs-verity ioctls and ``struct fsverity_enable_arg`` are the Linux
UAPI (``include/uapi/linux/fsverity.h``, Documentation/filesystems/fsverity.rst);
the mtime convention is OSTree's (objects of a bare repository have mtime 0).
The threat model: docs/store-integrity.md.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import struct
from typing import Any, NamedTuple

from atoll.core.fsutil import LIBC

__all__ = ["OBJECT_MTIME", "ObjectStat", "seal", "seal_mtime_ns", "sealed", "stamp",
           "stat_object"]

OBJECT_MTIME = 0  # seconds since the epoch: every checked-out file has it

# <linux/fsverity.h>: _IOW('f', 133, struct fsverity_enable_arg), 128 bytes
FS_IOC_ENABLE_VERITY = 0x40806685
# <linux/fs.h>: _IOR('f', 1, long); the kernel reads and writes an int
FS_IOC_GETFLAGS = 0x80086601
FS_VERITY_FL = 0x00100000
_HASH_SHA256 = 1
_BLOCK_SIZE = 4096  # the page size: Linux 6.1 supports only that
# version, hash_algorithm, block_size, salt_size, salt_ptr, sig_size, reserved,
# sig_ptr, reserved[11]
_ENABLE_ARG = struct.pack("=IIIIQIIQ88x", 1, _HASH_SHA256, _BLOCK_SIZE, 0, 0, 0, 0, 0)
# what the kernel or filesystem answers when it cannot seal at all
_UNSUPPORTED = (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


# statx(2): <linux/stat.h>, ``struct statx`` (256 bytes); glibc >= 2.28 exports it
_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_STATX_BASIC_STATS = 0x7FF
_STATX_ATTR_VERITY = 0x00100000
# mask, blksize, attributes, nlink, uid, gid, mode, (pad), ino, size, blocks,
# attributes_mask, then atime, btime, ctime, mtime as (sec, nsec, pad), then the rest
_STATX = struct.Struct("=IIQIIIH2xQQQQ" + "qIi" * 4 + "128x")


def _load_statx() -> tuple[Any, Any, Any] | None:
    """(statx, create_string_buffer, get_errno), or None with a C library without statx."""
    import ctypes

    try:
        fn = LIBC.statx
    except AttributeError:
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn, ctypes.create_string_buffer, ctypes.get_errno


_UNLOADED: Any = object()
_statx: Any = _UNLOADED  # loaded at the first stat_object (ctypes is not loaded at import)


class ObjectStat(NamedTuple):
    """What the seal check reads of a file object's inode (the fields of ``os.stat_result``
    it uses, and whether fs-verity seals it)."""

    st_mode: int
    st_uid: int
    st_gid: int
    st_size: int
    st_mtime_ns: int
    verity: bool


def stat_object(path: str, dir_fd: int | None = None) -> ObjectStat | None:
    """The ``lstat`` of ``path`` (relative to the directory ``dir_fd`` when given) and its
    fs-verity flag, in one ``statx`` call where the C library has it (else ``lstat``,
    then :func:`sealed` for a regular file: an open, an ioctl and a close more per
    object, which deploy pays for every object of a tree). None when ``path`` cannot be
    read."""
    global _statx
    if _statx is _UNLOADED:
        _statx = _load_statx()
    if _statx is not None:
        call, new_buffer, get_errno = _statx
        buf = new_buffer(_STATX.size)
        if not call(_AT_FDCWD if dir_fd is None else dir_fd, os.fsencode(path),
                    _AT_SYMLINK_NOFOLLOW, _STATX_BASIC_STATS, buf):
            return _from_statx(_STATX.unpack_from(buf))
        if get_errno() not in (errno.ENOSYS, errno.EPERM):
            return None
        _statx = None  # statx filtered (an old container's seccomp profile): as without it
    try:
        st = os.lstat(path, dir_fd=dir_fd)
    except OSError:
        return None
    verity = stat.S_ISREG(st.st_mode) and sealed(path, dir_fd)
    return ObjectStat(st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, verity)


def _from_statx(f: tuple[Any, ...]) -> ObjectStat:
    # f: 0 mask, 2 attributes, 4 uid, 5 gid, 6 mode, 8 size, 10 attributes_mask,
    # 11-22 the four timestamps (sec, nsec, pad): mtime at 20, 21
    return ObjectStat(f[6], f[4], f[5], f[8], f[20] * 1_000_000_000 + f[21],
                      bool(f[2] & _STATX_ATTR_VERITY))


def seal_mtime_ns(oid: str, st: os.stat_result | ObjectStat) -> int:
    """The mtime (ns since the epoch) that marks the file object ``oid`` with the
    inode ``st`` (its ``lstat``) as verified: 0 s and a nanosecond part in [1,
    10^9) derived from the id, the mode, the owner and the group, so that a file
    object's mark differs from every other's and moves with a mode or owner
    change. Filesystems that keep no nanoseconds never match: their objects are
    re-hashed at each use (safe, slower)."""
    key = f"{oid}:{st.st_mode:o}:{st.st_uid}:{st.st_gid}".encode()
    return 1 + int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % 999_999_999


def stamp(path: str, oid: str) -> None:
    """Give a verified file object (a regular file or a symlink, its mode and owner
    already final) its seal mtime (:func:`seal_mtime_ns`)."""
    ns = seal_mtime_ns(oid, os.lstat(path))
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def seal(path: str) -> bool | None:
    """Enable fs-verity on the regular file ``path``.

    The file must be complete and have no open writer (the kernel refuses with
    ``ETXTBSY``). Building the Merkle tree reads the whole file once.

    Returns:
        True when the file is sealed (now or before); None when this filesystem or
        kernel cannot seal (the caller stops trying).

    Raises:
        OSError: any other failure (no space for the Merkle tree, an I/O error).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FS_IOC_ENABLE_VERITY, _ENABLE_ARG)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return True
        if exc.errno in _UNSUPPORTED:
            return None
        raise
    finally:
        os.close(fd)
    return True


def sealed(path: str, dir_fd: int | None = None) -> bool:
    """Whether the regular file ``path`` (relative to the directory ``dir_fd`` when
    given) carries fs-verity (False when unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return False
    try:
        buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)
    except OSError:
        return False
    finally:
        os.close(fd)
    return bool(struct.unpack("=i", buf[:4])[0] & FS_VERITY_FL)
