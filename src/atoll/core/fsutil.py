"""Atomic file operations: every state change is atomic.

Temp file in the same directory, fsync, ``os.replace``, fsync the directory;
the temp file is removed on error. Symlink swaps follow the same pattern.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atoll.core import canonjson

__all__ = [
    "atomic_symlink",
    "atomic_write",
    "atomic_write_json",
    "fsync_dir",
    "open_atomic",
    "read_json",
    "sha256_file",
]


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_atomic(path: Path, mode: int = 0o644, *, sync: bool = True) -> Iterator[Any]:
    """Open a temp file beside ``path``; on clean exit it replaces ``path`` atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, mode: int = 0o644, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix."""
    with open_atomic(path, mode, sync=sync) as fh:
        fh.write(data)


def atomic_write_json(path: Path, value: Any, mode: int = 0o644) -> None:
    """Write canonical JSON (plus a newline) atomically."""
    atomic_write(path, canonjson.dumps(value) + b"\n", mode)


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file, or return ``default`` when it does not exist."""
    try:
        return canonjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        return default


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
