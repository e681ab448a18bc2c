"""Atomic file operations: every state change is atomic.

Temp file in the same directory, fsync, ``os.replace``, fsync the directory;
the temp file is removed on error. Symlink swaps follow the same pattern.
Temp files are created 0600 and get their final mode only once complete.

Durability points (``syncfs``, and files made durable one by one) can be
traced for crash tests: with ``ATOLL_TRACE_SYNC=FILE`` in the environment,
each appends ``<time_ns> syncfs-begin|syncfs-end|durable <path>`` to FILE, so
a test that kills a command can tell which files a power cut could have
lost (see tests/integration/powerloss.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atoll.core import canonjson
from atoll.core.errors import DamagedStateError, DiskFullError

__all__ = [
    "LIBC",
    "append_json_line",
    "atomic_symlink",
    "atomic_write",
    "atomic_write_json",
    "copy_data",
    "copy_private",
    "damaged",
    "disk_full",
    "free_bytes",
    "fsync_dir",
    "open_atomic",
    "open_beneath",
    "read_json",
    "read_state_json",
    "read_xattrs",
    "sha256_file",
    "syncfs",
    "trace_durable",
]

_TRACE = os.environ.get("ATOLL_TRACE_SYNC")
LIBC = ctypes.CDLL(None, use_errno=True)  # the C library (syncfs; statx in store.seal)


def _trace(event: str, path: str | os.PathLike[str]) -> None:
    if _TRACE:
        line = f"{time.time_ns()} {event} {os.path.abspath(path)}\n".encode()
        fd = os.open(_TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def trace_durable(path: str | os.PathLike[str]) -> None:
    """Note (for crash tests) that ``path`` was just made durable on its own."""
    _trace("durable", path)


def syncfs(path: Path) -> None:
    """Flush the whole filesystem holding ``path`` (one sync per transaction, as OSTree)."""
    _trace("syncfs-begin", path)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if LIBC.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)
    _trace("syncfs-end", path)


def read_xattrs(path: str | os.PathLike[str] | int, *,
                follow_symlinks: bool = False) -> dict[str, bytes]:
    """A file's extended attributes (not following symlinks unless told), by path or of
    an open descriptor; {} where unsupported; one removed while read is left out."""
    follow = {} if isinstance(path, int) else {"follow_symlinks": follow_symlinks}
    try:
        names = os.listxattr(path, **follow)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    out = {}
    for name in names:
        try:
            out[name] = os.getxattr(path, name, **follow)
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # removed since it was listed: as absent
                raise
    return out


# openat2(2): <linux/openat2.h>; the syscall number is the same (437) on every
# architecture of the generic table (x86_64, aarch64, ...)
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_openat2 = True  # until the kernel (or a seccomp filter) says it has none


def open_beneath(root_fd: int, rel: str, flags: int) -> int:
    """Open ``rel`` (a relative path) below the directory ``root_fd`` without following
    a symlink anywhere on the way, nor leaving ``root_fd``: where another user can
    rename directories of the tree meanwhile (a live /etc), a path-based open could be
    steered to any file of the system.

    Uses ``openat2(2)`` with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`` (Linux >= 5.6);
    without it, one ``O_NOFOLLOW`` ``openat`` per component. ``O_CLOEXEC`` is added.

    Raises:
        OSError: ELOOP (a symlink on the way), EXDEV (it would leave ``root_fd``),
            ENOENT, ENOTDIR, and the other errors of open(2).
    """
    global _openat2
    flags |= os.O_CLOEXEC
    if _openat2:
        how = _OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS
                       | _RESOLVE_NO_MAGICLINKS)
        fd = LIBC.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(root_fd),
                          ctypes.c_char_p(os.fsencode(rel)), ctypes.byref(how),
                          ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter
            raise OSError(err, os.strerror(err), rel)
        _openat2 = False
    *dirs, name = parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise OSError(errno.EXDEV, "not a plain path below the directory", rel)
    dfd = os.dup(root_fd)
    try:
        for part in dirs:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=dfd)
            os.close(dfd)
            dfd = nfd
        return os.open(name, flags | os.O_NOFOLLOW, dir_fd=dfd)
    finally:
        os.close(dfd)


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def free_bytes(path: Path) -> int:
    """Bytes available to unprivileged writers on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def disk_full(exc: OSError, where: Path, what: str, *,
              unchanged: str = "nothing was changed") -> DiskFullError | None:
    """The one-line error for a full disk (ENOSPC: no space or no inodes left; EDQUOT),
    or None for other errors.

    ``what`` says what was being written ("commit of site/db", "download"); the
    brief ends with ``unchanged`` (what the caller guarantees is as it was) and the
    resolution says what can be freed.
    """
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    try:
        st = os.statvfs(where)
        free = f"{st.f_bavail * st.f_frsize // (1 << 20)} MiB and {st.f_favail} inodes free"
    except OSError:
        free = "no space left"
    return DiskFullError(
        f"disk full during {what}: {where} ({free}); {unchanged}",
        resolution="free space and run the command again: `atoll store gc` removes "
        "unreferenced objects, `atoll undeploy N` old deployments, "
        "`atoll store refs --delete REF` unused refs")


@contextlib.contextmanager
def open_atomic(path: Path, mode: int = 0o644, *, sync: bool = True) -> Iterator[Any]:
    """Open a temp file beside ``path``; on clean exit it replaces ``path`` atomically."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # name the file being written, not a temp name nobody knows
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
    try:
        with os.fdopen(fd, "wb") as fh:  # mkstemp: 0600 until complete
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            if sync:
                os.fsync(fh.fileno())
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(path.parent)
        trace_durable(path)


def atomic_write(path: Path, data: bytes, mode: int = 0o644, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix."""
    with open_atomic(path, mode, sync=sync) as fh:
        fh.write(data)


def atomic_write_json(path: Path, value: Any, mode: int = 0o644) -> None:
    """Write canonical JSON (plus a newline) atomically."""
    atomic_write(path, canonjson.dumps(value) + b"\n", mode)


def append_json_line(path: Path, value: Any) -> None:
    """Append ``value`` as one canonical JSON line, durably (fsync); an event log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, canonjson.dumps(value) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    trace_durable(path)


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file, or return ``default`` when it does not exist."""
    try:
        return canonjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        return default


def damaged(path: Path, why: str, resolution: str) -> DamagedStateError:
    """The one-line error for a state file atoll wrote that no longer reads as it should
    (a disk error, a power cut under an older atoll, a hand edit)."""
    from atoll.core.text import printable

    return DamagedStateError(f"damaged state file {printable(str(path))}: {why}",
                             resolution=resolution, path=str(path))


def read_state_json(path: Path, expect: type | tuple[type, ...] = dict, default: Any = None,
                    *, resolution: str) -> Any:
    """A state file as JSON of the type ``expect``, or ``default`` when it does not exist.

    Raises:
        DamagedStateError: the file is not UTF-8 JSON of that type (:func:`damaged`, with
            ``resolution``: what to do about this file).
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return default
    try:
        value = canonjson.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError is one too
        why = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "not valid JSON"
        raise damaged(path, why, resolution) from None
    if not isinstance(value, expect):
        want = "an object" if expect is dict else "a list" if expect is list else "a value"
        raise damaged(path, f"expected {want}, found {_json_type(value)}", resolution)
    return value


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), "a value")


def sha256_file(path: Path) -> str:
    """sha256 of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def atomic_symlink(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` atomically (create a temp symlink, rename over)."""
    link = Path(link)
    tmp = link.parent / f".{link.name}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(link.parent)
    trace_durable(link)


def copy_data(src_fd: int, dst_fd: int) -> None:
    """Copy the rest of ``src_fd`` to ``dst_fd``: in the kernel (``copy_file_range``,
    reflinks where the filesystem has them), else by reading and writing."""
    try:
        while os.copy_file_range(src_fd, dst_fd, 1 << 30):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    os.lseek(src_fd, 0, os.SEEK_SET)
    os.lseek(dst_fd, 0, os.SEEK_SET)
    os.ftruncate(dst_fd, 0)
    while chunk := os.read(src_fd, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view):]


def copy_private(src: Path, dest: Path) -> None:
    """Copy a file's content to a new file ``dest`` created 0600 (``O_EXCL``): a copy of
    a secret is never readable by others, even while it is being written."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with open(src, "rb") as fh:
            copy_data(fh.fileno(), fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest)
        raise
    os.close(fd)
