"""What the host sees of its database's replication, for the fleet gate.

Read with the apps layer's ``exec_sql`` (the monitoring user, never a password
on a command line) and turned into :class:`atoll.fleet.gating.ReplicationFacts`:

- ``SHOW REPLICA STATUS`` (MariaDB >= 10.5, MySQL >= 8.0.22; ``SHOW SLAVE STATUS``
  before) with a row: the host is a **replica**; IO/SQL threads and
  ``Seconds_Behind_Source`` / ``Seconds_Behind_Master`` give its health. The
  copies it can see are its source (when the IO thread is connected) and itself.
- otherwise replicas connected to it (``Binlog Dump`` threads in the process
  list, which the monitoring user's PROCESS privilege shows; ``SHOW REPLICAS``
  would need REPLICATION MASTER ADMIN on MariaDB): a **primary**; the copies
  it can see are itself plus the connected replicas.
- neither: no replication.
"""

from __future__ import annotations

from pathlib import Path

from atoll.core.errors import AtollError
from atoll.fleet.gating import GateDecision, ReplicationFacts, may_take_slot

__all__ = ["gate_host", "parse_vertical", "replication_facts"]


def parse_vertical(text: str) -> list[dict[str, str]]:
    """Rows of mysql's vertical (``\\G``) output: ``*** 1. row ***`` then ``Key: value``."""
    rows: list[dict[str, str]] = []
    for line in text.splitlines():
        if line.startswith("*") and "row" in line:
            rows.append({})
            continue
        key, sep, value = line.strip().partition(":")
        if sep and rows:
            rows[-1][key.strip()] = value.strip()
    return rows


def _yes(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip().lower() == "yes"


def facts_from(replica_rows: list[dict[str, str]], replica_hosts: int) -> ReplicationFacts:
    """Pure: replication facts from SHOW REPLICA STATUS rows and the count of connected replicas."""
    if replica_rows:
        row = replica_rows[0]
        io = _yes(row.get("Replica_IO_Running", row.get("Slave_IO_Running")))
        sql = _yes(row.get("Replica_SQL_Running", row.get("Slave_SQL_Running")))
        raw = row.get("Seconds_Behind_Source", row.get("Seconds_Behind_Master"))
        lag = float(raw) if raw not in (None, "", "NULL") else None
        return ReplicationFacts("replica", lag, io, sql, 2 if io else 1)
    if replica_hosts > 0:
        return ReplicationFacts("primary", healthy_copies=1 + replica_hosts)
    return ReplicationFacts("none")


def replication_facts(sysroot: Path, app: str) -> ReplicationFacts:
    """Ask the app's database.

    Raises:
        RuntimeBackendError: the database did not answer (the gate then denies).
    """
    status = _first_that_works(sysroot, app, ("SHOW REPLICA STATUS\\G", "SHOW SLAVE STATUS\\G"))
    replicas = _first_that_works(sysroot, app, (REPLICAS_SQL,))
    return facts_from(parse_vertical(status), int(replicas.strip() or "0"))


REPLICAS_SQL = ("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                "WHERE COMMAND LIKE 'Binlog Dump%'")


def _first_that_works(sysroot: Path, app: str, statements: tuple[str, ...]) -> str:
    """Servers differ in which spelling they accept (MariaDB, MySQL 8.0, 8.4)."""
    from atoll.apps.manager import exec_sql

    error: AtollError | None = None
    for sql in statements:
        try:
            return exec_sql(app, sql, sysroot=sysroot)
        except AtollError as exc:
            error = exc
    assert error is not None
    raise error


def gate_host(sysroot: Path, max_lag_seconds: float) -> list[tuple[str, GateDecision]]:
    """The gate's decision for every database app on the host."""
    from atoll.apps.manager import installed_apps
    from atoll.apps.plan import is_database

    out = []
    for inst in installed_apps(sysroot):
        if not is_database(inst.spec):
            continue
        try:
            facts = replication_facts(sysroot, inst.name)
        except AtollError as exc:
            out.append((inst.name, GateDecision(False, "database_unreachable",
                                                f"the database did not answer: {exc.brief}")))
            continue
        out.append((inst.name, may_take_slot(facts, max_lag_seconds)))
    return out
