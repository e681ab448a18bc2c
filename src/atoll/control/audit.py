"""The audit chain's anchors outside the database, and its verification.

The chain itself (:mod:`atoll.control.auditchain`, table ``audit_links``) lives in the
database with the actions it covers; whoever controls the database could rewrite it
all. So the server signs the chain's head now and then with a key that is only on
its own disk, and writes the signed checkpoints to a directory outside the database:

    AUDIT_DIR/                   default: DIR/audit beside an SQLite database
                                 (sqlite:///DIR/control.db), else
                                 /var/lib/atoll/control/audit/HOST-PORT-DATABASE
        audit-key.pem            Ed25519 private key, PKCS#8 PEM, mode 0600 (dir 0700)
        audit-key.pub            its public key, PEM (copy it where verification runs)
        checkpoints/
            000000000042.json    the head at seq 42: {format, seq, hash, time, key, signature}

When: at server start, every ``CHECKPOINT_S`` (60 s) when the chain grew, and at
stop (:class:`atoll.control.server.ControlServer`); ``atoll fleet audit checkpoint``
writes one now; none is signed over a chain that no longer holds the latest one.
:func:`verify` walks the whole chain and checks that every checkpoint is validly
signed and that its head is still in the chain with the same hash: removing the
newest actions, or rewriting the chain, is then detected up to the last checkpoint
(actions after it are covered by the chain alone until the next).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from atoll.control.auditchain import GENESIS, Break, Checkpoint, Link, canonical, first_break
from atoll.control.db import Database
from atoll.control.models import AuditLink, Event
from atoll.core.errors import HostStateError, InputError, RepositoryError
from atoll.core.fsutil import atomic_write

__all__ = ["CHECKPOINT_S", "Verified", "audit_dir_for", "checkpoint", "default_dir", "head",
           "latest", "load_public_key", "signing_key", "verify"]

CHECKPOINT_S = 60.0
KEY_FILE = "audit-key.pem"
PUB_FILE = "audit-key.pub"
_BATCH = 2000


def default_dir(db: Database) -> Path:
    """``DIR/audit`` beside an SQLite database, else
    ``/var/lib/atoll/control/audit/HOST-PORT-DATABASE``: one per database (checkpoints
    of another database would read as a broken chain)."""
    if db.dialect == "sqlite":
        return Path(str(db.url.database)).resolve().parent / "audit"
    u = db.url
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{u.host or 'local'}-{u.port or 5432}-{u.database}")
    return Path("/var/lib/atoll/control/audit") / name


def signing_key(audit_dir: Path) -> Ed25519PrivateKey:
    """The server's checkpoint key, created (0600, directory 0700) on first use.

    Raises:
        InputError: the directory cannot be written, the key file is readable by
            others or is not an Ed25519 key.
    """
    path = audit_dir / KEY_FILE
    try:
        if not path.exists():
            _create_key(audit_dir, path)  # or another instance's, if it won the race
        if path.stat().st_mode & 0o077:
            raise InputError(f"{path}: the audit key is readable by others",
                             resolution=f"chmod 600 {path}")
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise InputError(f"{audit_dir}: the audit directory cannot be used ({exc.strerror})",
                         resolution="give a directory the server may write with "
                         "--audit-dir") from None
    except ValueError:
        raise InputError(f"{path}: not a PEM private key") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise InputError(f"{path}: not an Ed25519 private key")
    return loaded


def _create_key(audit_dir: Path, path: Path) -> None:
    """Write a new key and its public half; two servers starting at once on one
    directory keep one key (hard link: the first one in wins, the other's is dropped)."""
    audit_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    tmp = audit_dir / f".{KEY_FILE}.{secrets.token_hex(8)}.tmp"
    atomic_write(tmp, key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()), 0o600)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return
    finally:
        tmp.unlink()
    atomic_write(audit_dir / PUB_FILE, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Raises: InputError: missing, or not an Ed25519 public key (PEM)."""
    try:
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise InputError(f"{path}: cannot read the audit public key ({exc.strerror})",
                         resolution="give the audit directory's audit-key.pub, or a copy "
                         "of it, with --public-key") from None
    except ValueError:
        raise InputError(f"{path}: not a PEM public key") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise InputError(f"{path}: not an Ed25519 public key")
    return loaded


def head(s: Session) -> tuple[int, str]:
    """``(seq, hash)`` of the chain's last link; ``(0, GENESIS)`` when empty."""
    row = s.execute(select(AuditLink.seq, AuditLink.hash)
                    .order_by(AuditLink.seq.desc()).limit(1)).first()
    return (row[0], row[1]) if row is not None else (0, GENESIS)


def _checkpoints(audit_dir: Path) -> Path:
    return audit_dir / "checkpoints"


def _files(audit_dir: Path) -> list[Path]:
    where = _checkpoints(audit_dir)
    return sorted(p for p in where.glob("*.json") if p.stem.isdigit()) if where.is_dir() else []


def _read(path: Path) -> Checkpoint:
    try:
        return Checkpoint.from_json(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise RepositoryError(f"{path}: not a readable audit checkpoint ({exc})") from None


def latest(audit_dir: Path) -> Checkpoint | None:
    """The checkpoint with the highest seq in ``audit_dir`` (None: none yet).

    Raises:
        RepositoryError: that file is not a checkpoint.
    """
    names = _files(audit_dir)
    return _read(names[-1]) if names else None


def _disagreement(s: Session, cps: list[Checkpoint]) -> str | None:
    """How the first of ``cps`` the chain no longer holds differs, or None."""
    for i in range(0, len(cps), 500):
        batch = [cp for cp in cps[i:i + 500] if cp.seq]
        held = dict(s.execute(select(AuditLink.seq, AuditLink.hash)
                              .where(AuditLink.seq.in_([cp.seq for cp in batch]))).all())
        for cp in batch:
            when = cp.time.isoformat(timespec="seconds")
            if cp.seq not in held:
                return (f"entry {cp.seq}, the head checkpointed at {when}, is no longer in "
                        "the chain (the newest entries were removed)")
            if held[cp.seq] != cp.hash:
                return (f"entry {cp.seq} differs from the one checkpointed at {when} (the "
                        "chain was rewritten)")
    return None


def checkpoint(db: Database, audit_dir: Path, now: dt.datetime) -> Checkpoint | None:
    """Sign the chain's head and write it to ``audit_dir/checkpoints/SEQ.json`` (atomic,
    0644), unless the latest checkpoint already has this seq; returns the new one.

    A chain that no longer holds the latest checkpoint's entry (the tail removed, or
    rewritten) is not signed over: the latest checkpoint stays the evidence.

    Raises:
        InputError: the key is unusable (:func:`signing_key`).
        RepositoryError: the latest checkpoint file is unreadable.
        HostStateError: the chain no longer holds the latest checkpoint.
    """
    key = signing_key(audit_dir)
    last = latest(audit_dir)
    with db.read() as s:
        seq, digest = head(s)
        differs = _disagreement(s, [last]) if last is not None else None
    if differs is not None:
        raise HostStateError(f"the audit chain is broken: {differs}; no new checkpoint is "
                             "signed over it", resolution="run `atoll fleet audit verify`")
    if last is not None and last.seq == seq:
        return None
    signed = Checkpoint(seq, digest, now).signed(key)
    _checkpoints(audit_dir).mkdir(mode=0o755, parents=True, exist_ok=True)
    atomic_write(_checkpoints(audit_dir) / f"{seq:012d}.json",
                 json.dumps(signed.to_json(), sort_keys=True, indent=1).encode() + b"\n",
                 0o644)
    return signed


def _links(s: Session) -> Iterator[Link]:
    after = 0
    while True:
        rows = s.execute(select(AuditLink, Event).outerjoin(Event, Event.id == AuditLink.event_id)
                         .where(AuditLink.seq > after).order_by(AuditLink.seq)
                         .limit(_BATCH)).all()
        for link, e in rows:
            body = None if e is None else canonical(link.seq, e.id, e.time, e.actor, e.kind,
                                                    e.customer_id, e.host_id, e.host_name,
                                                    e.data)
            yield Link(link.seq, link.event_id, link.prev_hash, link.hash, body)
        if len(rows) < _BATCH:
            return
        after = rows[-1][0].seq
        s.expunge_all()


@dataclass(frozen=True)
class Verified:
    """What :func:`verify` found. ``ok`` when ``broken`` is None and no ``problems``;
    ``entries``: the links verified (before the break, if any); ``head``: ``(seq, hash)``
    of the last of them."""

    entries: int
    head: tuple[int, str]
    broken: Break | None
    checkpoint: Checkpoint | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.broken is None and not self.problems

    def to_json(self) -> dict[str, Any]:
        b = self.broken
        return {"ok": self.ok, "entries": self.entries,
                "head": {"seq": self.head[0], "hash": self.head[1]},
                "broken": None if b is None else {"seq": b.seq, "event_id": b.event_id,
                                                  "reason": b.reason, "text": str(b)},
                "checkpoint": None if self.checkpoint is None else self.checkpoint.to_json(),
                "problems": self.problems}


def verify(db: Database, audit_dir: Path | None, public_key: Ed25519PublicKey | None
           ) -> Verified:
    """Walk the chain, find operators' actions left out of it, and check the
    checkpoints in ``audit_dir``: every one signed by ``public_key`` (default: the
    directory's ``audit-key.pub``) and its seq and hash still in the chain (the latest
    alone would miss a tail cut and then grown again past it).

    Raises:
        InputError: no public key to check a checkpoint with.
        RepositoryError: a checkpoint file is unreadable.
    """
    problems: list[str] = []
    with db.read() as s:
        end = first_break(_links(s))
        unchained = s.execute(select(Event.id, Event.actor, Event.kind).where(
            Event.actor.not_like("host:%"), Event.actor != "server",
            ~exists().where(AuditLink.event_id == Event.id)).order_by(Event.id).limit(1)).first()
        if unchained is not None:
            problems.append(f"event {unchained[0]} ({unchained[2]} by {unchained[1]}) is an "
                            "operator's action outside the chain (inserted behind its back)")
        cps = [_read(p) for p in _files(audit_dir)] if audit_dir is not None else []
        cp = max(cps, key=lambda c: c.seq) if cps else None
        if cps:
            if public_key is None:
                assert audit_dir is not None
                public_key = load_public_key(audit_dir / PUB_FILE)
            forged = next((c for c in reversed(cps) if not c.valid(public_key)), None)
            if forged is not None:
                problems.append(f"the checkpoint at entry {forged.seq} is not signed by the "
                                "audit key")
            differs = _disagreement(s, sorted(cps, key=lambda c: -c.seq))
            if differs is not None:
                problems.append(differs)
        if isinstance(end, Break):
            good = end.seq - 1
            last = s.scalar(select(AuditLink.hash).where(AuditLink.seq == good)) if good else None
            return Verified(good, (good, last or GENESIS), end, cp, problems)
    return Verified(end[0], end, None, cp, problems)


def audit_dir_for(db: Database, given: str | os.PathLike[str] | None) -> Path:
    """``given`` as a path, else :func:`default_dir`."""
    return Path(given) if given is not None else default_dir(db)
