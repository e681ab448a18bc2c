"""Reading a file a person named (``--root root.json``, ``--config``, ``--secret``, a key).

A path given on the command line or in a spec may name anything: ``/dev/zero``
(endless), a FIFO (a read blocks forever), a directory, or a multi-gigabyte
file. Every such read goes through :func:`read_user_file`: a regular file only
(checked on the open descriptor, which is opened without blocking), and at most
``limit`` bytes, so a mistyped path is an :class:`InputError` (exit 2) at once,
never a hang or a ``MemoryError``.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from atoll.core.errors import InputError

__all__ = ["open_user_file", "read_user_file"]


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 1024:g} KiB" if n >= 1024 \
        else f"{n} bytes"


@contextlib.contextmanager
def open_user_file(path: str | os.PathLike[str], what: str = "file") -> Iterator[BinaryIO]:
    """Open ``path`` for reading if it is a regular file (after following symlinks).

    The open does not block (``O_NONBLOCK``: a FIFO with no writer opens at once and is
    then refused), and ``O_NOCTTY`` keeps a terminal device from becoming ours.

    Raises:
        InputError: missing, unreadable, or not a regular file (FIFO, device, directory).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(os.fspath(path), flags)
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot read: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise InputError(f"{what} {path}: is {kind}, not a regular file",
                             resolution="give the path of a regular file")
        os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def read_user_file(path: str | os.PathLike[str], limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.

    Args:
        limit: the largest size accepted, in bytes.
        what: what the file is, for messages (``--root``, ``FleetLock config``).

    Raises:
        InputError: missing, unreadable, not a regular file, or larger than ``limit``.
    """
    with open_user_file(path, what) as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise InputError(f"{what} {path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise InputError(f"{what} {path}: larger than {_size(limit)}, the limit for it",
                         resolution="check the path: this is not the file meant")
    return data

