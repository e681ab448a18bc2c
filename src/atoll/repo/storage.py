"""Where a TUF repository's files live: a directory of static files, or memory (tests)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Protocol

from atoll.core.errors import InputError
from atoll.core.fsutil import atomic_write, open_atomic

__all__ = ["DirStorage", "MemStorage", "Storage"]


def _check(rel: str) -> str:
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InputError(f"refusing repository path {rel!r}")
    return rel


class Storage(Protocol):
    """The files of a published repository, by relative path (``metadata/1.root.json``)."""

    def get(self, rel: str) -> bytes | None: ...

    def put(self, rel: str, data: bytes) -> None: ...

    def put_file(self, rel: str, src: Path) -> None: ...

    def exists(self, rel: str) -> bool: ...

    def remove(self, rel: str) -> None: ...


class DirStorage:
    """Plain static files under ``root``: any web server, object store or CDN serves them."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, rel: str) -> Path:
        return self.root / _check(rel)

    def get(self, rel: str) -> bytes | None:
        try:
            return self._path(rel).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, rel: str, data: bytes) -> None:
        p = self._path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(p, data)

    def put_file(self, rel: str, src: Path) -> None:
        p = self._path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open_atomic(p) as out, open(src, "rb") as fh:
            shutil.copyfileobj(fh, out, 1 << 20)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self._path(rel))

    def remove(self, rel: str) -> None:
        """Delete a file (gone already: nothing to do)."""
        with contextlib.suppress(FileNotFoundError):
            self._path(rel).unlink()


class MemStorage:
    """An in-memory repository (unit tests serve it through a fake fetcher)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def get(self, rel: str) -> bytes | None:
        return self.files.get(_check(rel))

    def put(self, rel: str, data: bytes) -> None:
        self.files[_check(rel)] = bytes(data)

    def put_file(self, rel: str, src: Path) -> None:
        self.files[_check(rel)] = Path(src).read_bytes()

    def exists(self, rel: str) -> bool:
        return _check(rel) in self.files

    def remove(self, rel: str) -> None:
        self.files.pop(_check(rel), None)
