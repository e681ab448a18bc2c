"""The control plane's database: one data layer over SQLite and PostgreSQL.

``Database(url)`` opens ``sqlite:///PATH`` (the default, one site) or
``postgresql://USER@HOST/DB`` (psycopg 3; several server instances may share it).
Every change runs in one transaction (``with db.write() as session``): committed
whole or not at all. Concurrency never relies on a lock inside one process:

* SQLite: write transactions start with ``BEGIN IMMEDIATE`` (one writer at a time,
  waiting up to ``BUSY_TIMEOUT_S``; readers never wait, WAL);
* PostgreSQL: READ COMMITTED with conditional ``UPDATE ... WHERE`` (a check-in's
  counter, a one-time token, a lost host), unique constraints (names) and
  ``INSERT ... ON CONFLICT`` (manifests, labels); the migration takes an advisory lock.

A database that cannot be reached (stopped, restarted, locked too long) raises
SQLAlchemy's ``OperationalError``/``InterfaceError``: :func:`unavailable` says so, the
server answers 503, and the pool checks connections before use (``pool_pre_ping``),
so the next request after the database is back works.

Schema versions are Alembic revisions (``atoll/control/migrations/versions``):
:meth:`Database.upgrade` applies the missing ones; a database whose revision this
atoll does not know (written by a newer atoll) is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from atoll.core.errors import HostStateError, InputError, RuntimeBackendError

__all__ = ["BUSY_TIMEOUT_S", "DEFAULT_DB", "Database", "normalize_url", "unavailable"]

log = logging.getLogger("atoll.control")
DEFAULT_DB = "sqlite:////var/lib/atoll/control/control.db"
BUSY_TIMEOUT_S = 20  # under atolld's 30 s HTTP timeout: a locked SQLite answers 503 in time
_MIGRATION_LOCK = 0x61746F6C6C  # "atoll": pg_advisory_xact_lock key of `db upgrade`


def normalize_url(url: str) -> URL:
    """``sqlite:///PATH`` or ``postgresql://...`` as the driver URL atoll uses.

    Raises:
        InputError: another scheme, or not a database URL.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InputError(f"--db: {url!r} is not a database URL",
                         resolution="e.g. sqlite:///var/lib/atoll/control/control.db or "
                         "postgresql://atoll@db.example/atoll") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise InputError("--db: an SQLite database needs a file: sqlite:///PATH")
        return parsed.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    raise InputError(f"--db: {backend!r} databases are not supported",
                     resolution="use sqlite:///PATH or postgresql://...")


def unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means "the database is not there now" (retry later: 503)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun below, not by pysqlite
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        read = conn.get_execution_options().get("atoll_read", False)
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")


class Database:
    """An engine and its sessions; ``write()``/``read()`` are the only ways in."""

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        """Raises: InputError: not a supported database URL."""
        self.url = normalize_url(url)
        self.dialect = self.url.get_backend_name()
        self.shown = self.url.render_as_string(hide_password=True)
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.dialect == "sqlite":
            path = Path(str(self.url.database))
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # token hashes, host keys, history: private; SQLite gives its -wal and -shm
            # files the database file's mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_timeout=10,
                          connect_args={"connect_timeout": 5})
        self.engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            _sqlite_events(self.engine)
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._read = sessionmaker(self.engine.execution_options(atoll_read=True),
                                  expire_on_commit=False)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A session in a write transaction: committed at the end, rolled back on error."""
        with self._write.begin() as session:
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session that only reads (on SQLite it never waits for a writer)."""
        with self._read() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # -- schema ------------------------------------------------------------

    def _alembic(self, conn: Any) -> Any:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", "atoll.control:migrations")
        cfg.attributes["connection"] = conn
        return cfg

    def _revisions(self, conn: Any) -> tuple[str | None, set[str], tuple[str, ...]]:
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(self._alembic(conn))
        known = {r.revision for r in script.walk_revisions()}
        current = MigrationContext.configure(conn).get_current_revision()
        return current, known, tuple(script.get_heads())

    def schema(self) -> dict[str, Any]:
        """``{"current", "head", "up_to_date"}``.

        Raises:
            HostStateError: the schema is newer than this atoll knows.
            RuntimeBackendError: the database cannot be reached.
        """
        with self._guard(), self.engine.connect() as conn:
            current, known, heads = self._revisions(conn)
        self._refuse_newer(current, known)
        return {"current": current, "head": heads[0] if len(heads) == 1 else list(heads),
                "up_to_date": current in heads}

    def _refuse_newer(self, current: str | None, known: set[str]) -> None:
        if current is not None and current not in known:
            raise HostStateError(
                f"the control plane database {self.shown} has schema revision {current!r}, "
                "which this atoll does not know (written by a newer atoll)",
                resolution="run the newer atoll (a downgrade of the schema is not supported)")

    def upgrade(self) -> list[str]:
        """Apply every migration the database lacks; returns the revisions applied.

        Safe with several instances starting at once (an advisory lock on PostgreSQL;
        one writer on SQLite).

        Raises:
            HostStateError: the schema is newer than this atoll knows.
            RuntimeBackendError: the database cannot be reached.
        """
        from alembic import command

        with self._guard(), self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            current, known, heads = self._revisions(conn)
            self._refuse_newer(current, known)
            if current in heads:
                return []
            from alembic.script import ScriptDirectory

            script = ScriptDirectory.from_config(self._alembic(conn))
            todo = [r.revision for r in script.iterate_revisions("heads", current)]
            command.upgrade(self._alembic(conn), "heads")
        applied = list(reversed(todo))
        log.info("control plane database %s: applied %s", self.shown, ", ".join(applied))
        return applied

    def require_current(self) -> None:
        """Raises: HostStateError: the schema is older or newer than this atoll's."""
        state = self.schema()
        if not state["up_to_date"]:
            raise HostStateError(
                f"the control plane database {self.shown} is at schema revision "
                f"{state['current']}, this atoll needs {state['head']}",
                resolution="run `atoll fleet db upgrade --db URL` (or start the server "
                "without --no-upgrade)")

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except DBAPIError as exc:
            if not unavailable(exc):
                raise
            raise RuntimeBackendError(f"the control plane database {self.shown} cannot be "
                                      "reached", details=str(exc.orig)[:2000],
                                      resolution="check that it runs and the URL") from None
