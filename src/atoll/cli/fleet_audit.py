"""``atoll fleet audit verify|checkpoint|export``: the audit log and its hash chain
(docs/control-plane.md, "Audit chain").

These run where the control plane's database is (``--db``) and read it directly:
verification must not trust a server that answers for the database it checks.
``--audit-dir`` is where the server keeps its signed checkpoints (default: ``audit``
beside an SQLite database, else /var/lib/atoll/control/audit/HOST-PORT-DATABASE);
``--public-key`` checks them with a copy of the key kept elsewhere. ``export`` writes
the audit log as the console's CSV (every customer: who reads the database reads it
all).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

from atoll.cli import emit
from atoll.cli.fleet import Common, _add, _database, _db_arg
from atoll.core.errors import CorruptObjectError, InputError

__all__ = ["register_fleet"]


def _verify(args: argparse.Namespace) -> int:
    from atoll.control import audit

    db = _database(args)
    try:
        db.require_current()
        key = audit.load_public_key(args.public_key) if args.public_key else None
        result = audit.verify(db, audit.audit_dir_for(db, args.audit_dir), key)
    finally:
        db.close()
    doc = result.to_json()
    if not result.ok:
        found = ([str(result.broken)] if result.broken else []) + result.problems
        raise CorruptObjectError(
            f"the audit chain is broken: {found[0]}",
            details="\n".join(found[1:]) or None,
            resolution="the audit log was tampered with in the database: restore it from a "
            "backup and find out who had write access")

    def human() -> str:
        cp = result.checkpoint
        anchored = (f"; the checkpoint at entry {cp.seq} "
                    f"({cp.time.isoformat(timespec='seconds')}) is signed and in the chain"
                    if cp else "; no checkpoint yet (the newest entries are unanchored)")
        return f"audit chain intact: {result.entries} entries" + anchored

    emit(args, doc, human)
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    from atoll.control import audit

    db = _database(args)
    try:
        db.require_current()
        where = audit.audit_dir_for(db, args.audit_dir)
        cp = audit.checkpoint(db, where, dt.datetime.now(dt.UTC))
    finally:
        db.close()
    doc: dict[str, Any] = {"written": cp is not None, "audit_dir": str(where),
                           "checkpoint": cp.to_json() if cp else None}
    emit(args, doc, f"checkpoint at entry {cp.seq} written to {where}" if cp
         else "the latest checkpoint is already at the chain's head")
    return 0


def _export(args: argparse.Namespace) -> int:
    from atoll.control.auth import Principal
    from atoll.control.console.audit_views import AuditFilter, csv_rows
    from atoll.control.errors import ApiError

    try:
        f = AuditFilter.parse({k: getattr(args, k) or "" for k in
                               ("who", "what", "customer", "since", "until")})
    except ApiError as exc:
        raise InputError(f"--{exc.brief}") from None
    db = _database(args)
    try:
        db.require_current()
        rows = csv_rows(db, Principal("cli", "admin", None), f)
        if args.out is None:
            for line in rows:
                sys.stdout.write(line)
            return 0
        try:
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise InputError(f"{args.out} exists; the export is not written over a file") \
                from None
        with os.fdopen(fd, "w", newline="") as fh:
            fh.writelines(rows)
    finally:
        db.close()
    return 0


def _dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audit-dir", type=Path, metavar="DIR",
                   help="the signed checkpoints and the key (default: DIR/audit beside an "
                   "SQLite database, else /var/lib/atoll/control/audit/HOST-PORT-DATABASE)")


def register_fleet(cmds: Any, common: Common) -> None:
    """Add ``atoll fleet audit ...``."""
    p = cmds.add_parser("audit", help="the audit log's hash chain (on the database)")
    ac = p.add_subparsers(dest="audit_command", metavar="COMMAND")
    ac.required = True
    v = _add(ac, common, "verify", _verify, "check every entry of the audit chain and the "
             "latest signed checkpoint; fails naming the first broken entry", server=False)
    _db_arg(v)
    _dir_arg(v)
    v.add_argument("--public-key", type=Path, metavar="FILE",
                   help="check checkpoints with this public key (PEM; default: the audit "
                   "directory's audit-key.pub)")
    c = _add(ac, common, "checkpoint", _checkpoint, "sign the chain's head now and write "
             "it to the audit directory (the server does so every minute)", server=False)
    _db_arg(c)
    _dir_arg(c)
    e = _add(ac, common, "export", _export, "the audit log as CSV, newest first (formula-"
             "like cells quoted, as the console's export)", server=False)
    _db_arg(e)
    e.add_argument("--who", metavar="TEXT", help="only actors containing this")
    e.add_argument("--what", metavar="KIND", help="only this action, e.g. token-created")
    e.add_argument("--customer", metavar="NAME", help="only this customer's")
    e.add_argument("--since", metavar="TIME", help="ISO 8601, e.g. 2026-12-01T00:00Z")
    e.add_argument("--until", metavar="TIME", help="ISO 8601 (a date: through that day)")
    e.add_argument("--out", type=Path, metavar="FILE",
                   help="write to a new file (mode 0600) instead of standard output")
