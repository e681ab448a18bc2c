"""FleetLock state for one site without etcd: a sqlite file.

Layout of the file (one row per group; ``value`` is the semaphore's JSON, the
same as in etcd: airlock's form, see ``atoll.fleet.semaphore``)::

    CREATE TABLE semaphore (
        grp     TEXT PRIMARY KEY,   -- group name, as configured (any string)
        value   TEXT NOT NULL,      -- {"total_slots":N,"holders":[..],"atoll_since":{..}}
        version INTEGER NOT NULL    -- bumped on every write; compare-and-swap on it
    );

Rows written by older atoll versions (``{"holders":[{"id":..,"since":..}],
"total_slots":N}``) are read as they are and rewritten in the current form by
the group's next write; the table itself is unchanged.

sqlite makes each write atomic and durable (WAL journal, ``synchronous=FULL``);
the CAS on ``version`` lets ``atoll fleetlock release`` run beside a serving
server, each in its own process.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from atoll.core.errors import InputError, RuntimeBackendError
from atoll.fleet.backends import Backend
from atoll.fleet.semaphore import Semaphore

__all__ = ["EmbeddedBackend"]

SCHEMA = """CREATE TABLE IF NOT EXISTS semaphore (
    grp TEXT PRIMARY KEY, value TEXT NOT NULL, version INTEGER NOT NULL)"""


class EmbeddedBackend(Backend):
    """Semaphores in a sqlite file; one connection, serialized by a lock."""

    kind = "embedded"

    def __init__(self, location: str) -> None:
        super().__init__()
        path = Path(location)
        if not location or not path.parent.is_dir():
            raise InputError(f"embedded fleet lock file {location!r}: directory does not exist",
                             resolution="create the directory, or give a path in an existing one")
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, timeout=10, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(SCHEMA)
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def _fail(self, exc: sqlite3.Error) -> RuntimeBackendError:
        return RuntimeBackendError(f"embedded fleet lock file {self.path} failed",
                                   details=f"{type(exc).__name__}: {exc}",
                                   resolution="check the file's permissions and free space")

    def load(self, group: str) -> tuple[Semaphore | None, int]:
        with self._lock:
            try:
                row = self._db.execute("SELECT value, version FROM semaphore WHERE grp = ?",
                                       (group,)).fetchone()
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
        if row is None:
            return None, 0
        return Semaphore.from_json(row[0], where=f"{self.path} group {group}"), int(row[1])

    def store(self, group: str, sem: Semaphore, version: int) -> int | None:
        value = sem.to_json().decode()
        with self._lock:
            try:
                if version == 0:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO semaphore (grp, value, version) VALUES (?, ?, 1)",
                        (group, value))
                else:
                    cur = self._db.execute(
                        "UPDATE semaphore SET value = ?, version = version + 1 "
                        "WHERE grp = ? AND version = ?", (value, group, version))
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
            return version + 1 if cur.rowcount == 1 else None

    def groups(self) -> list[str]:
        with self._lock:
            try:
                rows = self._db.execute("SELECT grp FROM semaphore ORDER BY grp").fetchall()
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
        return [str(r[0]) for r in rows]

    def describe(self) -> str:
        return f"embedded file {self.path}"

    def close(self) -> None:
        with self._lock:
            self._db.close()
