"""The control plane's tables (SQLAlchemy 2, one schema for SQLite and PostgreSQL).

    customers         the tenants: set by operators, never from what a host reports
    operator_tokens   bearer tokens of people and tools: role, customer scope, sha256
    enrol_tokens      one-time tokens that bind a new host to a customer
    hosts             one row per enrolled host: its key, its counter, the last check-in
    host_labels       operators' labels (site, role...) by which groups are chosen
    host_requests     operators' requests for one host (cancel, pin, ack, apply)
    manifests         package manifests by sha256, shared by every host that runs one
    events            append-only history: host events and operator actions
    audit_links       the hash chain over operators' actions (atoll.control.auditchain);
                      written by an insert of such an event itself; migration 0005
    rollouts          one row per rollout: its document (spec, members, state), its
                      signed versions, its customer (scope); migration 0002
    rollout_hosts     one row per host a rollout decided for: its wave, phase, progress
    version_samples   hosts per (hour, customer, booted version), written once an hour
                      by the server (atoll.control.history); migration 0006

Migrations (``atoll/control/migrations``) create these; a change to a model is a new
migration. Times are aware UTC datetimes (:class:`UTCDateTime` stores them naive UTC
on SQLite, which has no time zones).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column

from atoll.control.auditchain import GENESIS, audited, canonical, link_hash

__all__ = [
    "ROLES",
    "AuditLink",
    "Base",
    "Customer",
    "EnrolToken",
    "Event",
    "Host",
    "HostLabel",
    "HostRequest",
    "Manifest",
    "OperatorToken",
    "RolloutHost",
    "RolloutRow",
    "UTCDateTime",
    "VersionSample",
    "doc_digest",
]

ROLES = ("viewer", "operator", "admin")  # each may do what the ones before it may
# an id column that is BIGINT on PostgreSQL and SQLite's INTEGER rowid alias
BigId = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An aware UTC datetime on both databases.

    Raises:
        ValueError: a naive datetime is bound (a bug: every time here is aware).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None,
                           dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime bound to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None,
                             dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON,
                           list[Any]: JSON}


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str] = mapped_column(String(200))


class OperatorToken(Base):
    """``customer_ids`` None: every customer; else the ids it may see and act on."""

    __tablename__ = "operator_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    customer_ids: Mapped[list[Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class EnrolToken(Base):
    __tablename__ = "enrol_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("customers.id"))
    host_name: Mapped[str | None] = mapped_column(String(63))
    labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    host_id: Mapped[str | None] = mapped_column(String(36))
    revoked_at: Mapped[dt.datetime | None]  # migration 0003


class Host(Base):
    """An enrolled host. The inventory columns repeat what the last check-in said, so
    that lists and filters are queries; ``report`` keeps that check-in whole (without
    the manifest, which is in ``manifests`` by ``manifest_sha256``)."""

    __tablename__ = "hosts"
    __table_args__ = (UniqueConstraint("customer_id", "name", name="uq_hosts_customer_name"),
                      Index("ix_hosts_last_seen", "last_seen"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("customers.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    machine_id: Mapped[str | None] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(String(64))  # Ed25519, raw 32 bytes, base64
    counter: Mapped[int] = mapped_column(BigInteger, default=0)
    enrolled_at: Mapped[dt.datetime]
    last_seen: Mapped[dt.datetime | None]
    lost: Mapped[bool] = mapped_column(Boolean, default=False)
    checkins: Mapped[int] = mapped_column(BigInteger, default=0)
    booted_version: Mapped[str | None] = mapped_column(String(200))
    booted_commit: Mapped[str | None] = mapped_column(String(64))
    pending_version: Mapped[str | None] = mapped_column(String(200))
    update_state: Mapped[str | None] = mapped_column(String(20))
    last_boot_result: Mapped[str | None] = mapped_column(String(20))
    last_boot_time: Mapped[str | None] = mapped_column(String(40))
    rollback_events: Mapped[int] = mapped_column(Integer, default=0)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class HostLabel(Base):
    __tablename__ = "host_labels"
    __table_args__ = (Index("ix_host_labels_key_value", "key", "value"),)

    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"),
                                         primary_key=True)
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class HostRequest(Base):
    """``state``: queued (sent with every answer until the host reports it), then done,
    failed or refused (as the host reported), or cancelled (by an operator)."""

    __tablename__ = "host_requests"
    __table_args__ = (Index("ix_host_requests_host_state", "host_id", "state"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(12), default="queued")
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    completed_at: Mapped[dt.datetime | None]
    message: Mapped[str | None] = mapped_column(Text)


class Manifest(Base):
    __tablename__ = "manifests"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    packages: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime]


class Event(Base):
    """One line of history. ``actor``: ``host:<id>``, ``operator:<token name>`` or
    ``server``. Host id and name are copied, not referenced: history outlives a pruned
    host. The database refuses UPDATE on this table, and DELETE of an event younger
    than 30 days (triggers; migration 0003): only the retention prunes history."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_host_time", "host_id", "time"),
                      Index("ix_events_customer_time", "customer_id", "time"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    time: Mapped[dt.datetime] = mapped_column(index=True)
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    host_id: Mapped[str | None] = mapped_column(String(36))
    host_name: Mapped[str | None] = mapped_column(String(63))
    actor: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class AuditLink(Base):
    """One operator's action in the audit chain (:mod:`atoll.control.auditchain`).
    Written by :func:`_chain` when its event is inserted, in the same transaction;
    the database refuses UPDATE and DELETE on it (triggers; migration 0005)."""

    __tablename__ = "audit_links"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("events.id"), unique=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


AUDIT_LOCK = 0x61756469  # "audi": pg_advisory_xact_lock key of the chain's head


def append_link(conn: Connection, e: Event) -> None:
    """Chain the operator's action ``e`` (inserted, in ``conn``'s transaction) after
    the head. Writers are serialized: SQLite's write transactions are (``BEGIN
    IMMEDIATE``), PostgreSQL's take a transaction-scoped advisory lock first, then read
    the head (READ COMMITTED: the statement sees the last committed link); a fork would
    still be refused by the primary key on ``seq``."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK})
    head = conn.execute(select(AuditLink.seq, AuditLink.hash)
                        .order_by(AuditLink.seq.desc()).limit(1)).first()
    seq, prev = (head[0] + 1, head[1]) if head is not None else (1, GENESIS)
    body = canonical(seq, e.id, e.time, e.actor, e.kind, e.customer_id, e.host_id,
                     e.host_name, e.data)
    conn.execute(insert(AuditLink).values(seq=seq, event_id=e.id, prev_hash=prev,
                                          hash=link_hash(prev, body)))


@event.listens_for(Event, "after_insert")
def _chain(mapper: Mapper[Event], conn: Connection, target: Event) -> None:
    if audited(target.actor):
        append_link(conn, target)


class RolloutRow(Base):
    """A rollout. ``doc`` is :meth:`atoll.control.rollouts.Rollout.to_json` (members,
    spec, state, wave, halt); ``state`` repeats its state for queries; ``versions``
    the signed versions it chooses among, oldest first (``[{"version", "commit"}]``);
    ``customer_id`` None: a group over every customer (only an every-customer token
    sees it). Check-ins that may grant lock this row (``SELECT ... FOR UPDATE``).
    ``doc_sha256``: sha256 of ``doc``'s canonical JSON, set whenever ``doc`` is written
    (migration 0003): ``doc`` is loaded only when asked for (it holds every member), and
    a check-in finds the parsed rollout by this digest in a cache."""

    __tablename__ = "rollouts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("customers.id"),
                                                    index=True)
    state: Mapped[str] = mapped_column(String(12), index=True)
    channel: Mapped[str] = mapped_column(String(200))
    versions: Mapped[list[Any]] = mapped_column(JSON)
    doc: Mapped[dict[str, Any]] = mapped_column(JSON, deferred=True)
    doc_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


def doc_digest(doc: Any) -> str:
    """sha256 (hex) of a JSON document's canonical form (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


@event.listens_for(RolloutRow.doc, "set", propagate=True)
def _doc_set(target: RolloutRow, value: Any, old: Any, initiator: Any) -> None:
    target.doc_sha256 = doc_digest(value)


class RolloutHost(Base):
    """One host in one rollout: ``wave`` its wave (fixed at creation for members; the
    last for a host that joined the group later), ``phase`` where it stands
    (:class:`atoll.control.rollouts.Phase`), ``progress``
    :meth:`~atoll.control.rollouts.HostProgress.to_json`, ``skipped`` why the rollout
    skips it (off its path: an unknown version, another channel; migration 0003; an
    event when it changes). Not a foreign key to hosts: a pruned host's progress stays
    with its rollout."""

    __tablename__ = "rollout_hosts"
    __table_args__ = (Index("ix_rollout_hosts_rollout_phase", "rollout_id", "phase"),)

    rollout_id: Mapped[str] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"),
                                            primary_key=True)
    host_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)
    member: Mapped[bool] = mapped_column(Boolean)
    phase: Mapped[str] = mapped_column(String(12))
    progress: Mapped[dict[str, Any]] = mapped_column(JSON)
    skipped: Mapped[str | None] = mapped_column(String(300), default=None)
    updated_at: Mapped[dt.datetime]


class VersionSample(Base):
    """How many hosts of ``customer_id`` booted ``version`` (``""``: none reported) at
    ``bucket`` (the start of an hour, UTC). Written once per bucket by
    :func:`atoll.control.history.record_versions`; pruned with the events."""

    __tablename__ = "version_samples"

    bucket: Mapped[dt.datetime] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    version: Mapped[str] = mapped_column(String(200), primary_key=True)
    hosts: Mapped[int] = mapped_column(Integer)
