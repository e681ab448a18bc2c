"""The audit chain: ``audit_links`` (atoll.control.auditchain), one link per operator's
action, and the actions recorded before this revision chained in the order of their
event ids. The database refuses UPDATE, DELETE and TRUNCATE on the links (triggers):
the chain only grows; whoever drops the triggers still cannot rewrite it unseen
(``atoll fleet audit verify`` and the signed checkpoints).

Revision ID: 0005_audit_chain
Revises: 0004_console
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atoll.control.auditchain import GENESIS, audited, canonical, link_hash
from atoll.control.models import UTCDateTime

revision = "0005_audit_chain"
down_revision = "0004_console"
branch_labels = None
depends_on = None

_PG = [
    """CREATE FUNCTION atoll_audit_links_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit chain is append-only';
END $$""",
    "CREATE TRIGGER audit_links_append_only BEFORE UPDATE OR DELETE ON audit_links "
    "FOR EACH ROW EXECUTE FUNCTION atoll_audit_links_append_only()",
    "CREATE TRIGGER audit_links_no_truncate BEFORE TRUNCATE ON audit_links "
    "FOR EACH STATEMENT EXECUTE FUNCTION atoll_audit_links_append_only()",
]
_SQLITE = [
    "CREATE TRIGGER audit_links_no_update BEFORE UPDATE ON audit_links "
    "BEGIN SELECT RAISE(ABORT, 'the audit chain is append-only'); END",
    "CREATE TRIGGER audit_links_no_delete BEFORE DELETE ON audit_links "
    "BEGIN SELECT RAISE(ABORT, 'the audit chain is append-only'); END",
]


def upgrade() -> None:
    links = op.create_table(
        "audit_links",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.BigInteger(), sa.ForeignKey("events.id"), nullable=False,
                  unique=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    assert links is not None
    events = sa.table("events", sa.column("id", sa.BigInteger()), sa.column("time", UTCDateTime()),
                      sa.column("customer_id", sa.BigInteger()),
                      sa.column("host_id", sa.String()), sa.column("host_name", sa.String()),
                      sa.column("actor", sa.String()), sa.column("kind", sa.String()),
                      sa.column("data", sa.JSON()))
    conn = op.get_bind()
    seq, prev = 0, GENESIS
    rows = conn.execute(sa.select(events).where(~events.c.actor.like("host:%"),
                                                events.c.actor != "server")
                        .order_by(events.c.id)).all()
    for e in rows:
        if not audited(e.actor):
            continue
        seq += 1
        digest = link_hash(prev, canonical(seq, e.id, e.time, e.actor, e.kind, e.customer_id,
                                           e.host_id, e.host_name, e.data))
        conn.execute(links.insert().values(seq=seq, event_id=e.id, prev_hash=prev,
                                           hash=digest))
        prev = digest
    for statement in _PG if op.get_context().dialect.name == "postgresql" else _SQLITE:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("atoll does not downgrade schemas")
