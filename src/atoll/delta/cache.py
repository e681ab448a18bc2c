"""What earlier publishes compressed, kept by content so no publish compresses it again.

In the publishing repository::

    repo/cache/publish/ab/<62 hex>     one entry: sha256 of the payload, then the payload

An entry's name is the sha256 of canonical JSON of everything its payload
depends on: what it is (``pack-chunk``, ``delta-file``), the ids of the
objects it holds or was made from, the compression settings and
:data:`VERSION` (bumped when atoll encodes differently). So a pack chunk
holding the same objects at the same level, or the patch of the same new
file against the same old one, is read back instead of being compressed
again. Readers check the payload's sha256 (a damaged entry is a miss) and the
pack writer also checks that a cached chunk decompresses to its objects.

Entries are written atomically without fsync (a lost entry is a miss); each
use refreshes its mtime, and :meth:`PublishCache.prune` removes entries no
publish used for :data:`MAX_AGE_DAYS` days.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from atoll.core import canonjson
from atoll.core.fsutil import atomic_write
from atoll.store.repo import Repo

__all__ = ["MAX_AGE_DAYS", "VERSION", "PublishCache"]

VERSION = 1
MAX_AGE_DAYS = 30


class PublishCache:
    """The compression cache of a publishing repository (see the module docstring)."""

    def __init__(self, repo: Repo):
        self.dir = repo.path / "cache" / "publish"
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(kind: str, **inputs: Any) -> str:
        """The entry name for a payload of ``kind`` made from ``inputs`` (JSON values)."""
        return hashlib.sha256(canonjson.dumps(
            {"kind": kind, "version": VERSION, **inputs})).hexdigest()

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / key[2:]

    def get(self, key: str) -> bytes | None:
        """The payload stored under ``key``, or None (missing or damaged)."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            self.misses += 1
            return None
        digest, payload = data[:32], data[32:]
        if hashlib.sha256(payload).digest() != digest:
            with contextlib.suppress(OSError):
                path.unlink()
            self.misses += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        self.hits += 1
        return payload

    def put(self, key: str, payload: bytes) -> None:
        """Store ``payload`` under ``key`` (best effort: a full disk only loses the entry)."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, hashlib.sha256(payload).digest() + payload, 0o600, sync=False)
        except OSError:
            pass

    def prune(self, max_age_days: float = MAX_AGE_DAYS) -> int:
        """Remove entries unused for ``max_age_days``; returns how many."""
        cutoff = time.time() - max_age_days * 86400
        n = 0
        try:
            subs = list(os.scandir(self.dir))
        except FileNotFoundError:
            return 0
        for sub in subs:
            with contextlib.suppress(OSError):
                for entry in os.scandir(sub.path):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        n += 1
        return n
