"""The control plane's core: customers, tokens, hosts, labels, requests, manifests, events.

Revision ID: 0001_core
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atoll.control.models import UTCDateTime

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_PG_APPEND_ONLY = """
CREATE FUNCTION atoll_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION atoll_events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION atoll_events_append_only();
"""
_SQLITE_APPEND_ONLY = [
    "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
    "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END",
    "CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
    "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END",
]


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "operator_tokens",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("customer_ids", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "enrol_tokens",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("customer_id", sa.BigInteger(), sa.ForeignKey("customers.id"),
                  nullable=False),
        sa.Column("host_name", sa.String(63), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("host_id", sa.String(36), nullable=True),
    )
    op.create_table(
        "hosts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.BigInteger(), sa.ForeignKey("customers.id"),
                  nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("machine_id", sa.String(64), nullable=True),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.Column("enrolled_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=True),
        sa.Column("lost", sa.Boolean(), nullable=False),
        sa.Column("checkins", sa.BigInteger(), nullable=False),
        sa.Column("booted_version", sa.String(200), nullable=True),
        sa.Column("booted_commit", sa.String(64), nullable=True),
        sa.Column("pending_version", sa.String(200), nullable=True),
        sa.Column("update_state", sa.String(20), nullable=True),
        sa.Column("last_boot_result", sa.String(20), nullable=True),
        sa.Column("last_boot_time", sa.String(40), nullable=True),
        sa.Column("rollback_events", sa.Integer(), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.UniqueConstraint("customer_id", "name", name="uq_hosts_customer_name"),
    )
    op.create_index("ix_hosts_customer_id", "hosts", ["customer_id"])
    op.create_index("ix_hosts_last_seen", "hosts", ["last_seen"])
    op.create_table(
        "host_labels",
        sa.Column("host_id", sa.String(36), sa.ForeignKey("hosts.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("key", sa.String(63), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
    )
    op.create_index("ix_host_labels_key_value", "host_labels", ["key", "value"])
    op.create_table(
        "host_requests",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("host_id", sa.String(36), sa.ForeignKey("hosts.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
    )
    op.create_index("ix_host_requests_host_state", "host_requests", ["host_id", "state"])
    op.create_table(
        "manifests",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("packages", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("host_id", sa.String(36), nullable=True),
        sa.Column("host_name", sa.String(63), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index("ix_events_time", "events", ["time"])
    op.create_index("ix_events_host_time", "events", ["host_id", "time"])
    op.create_index("ix_events_customer_time", "events", ["customer_id", "time"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(_PG_APPEND_ONLY)
    else:
        for statement in _SQLITE_APPEND_ONLY:
            op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("atoll does not downgrade schemas")
