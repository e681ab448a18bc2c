"""Event retention, revocable enrolment tokens, content-addressed rollout documents.

* ``events``: still never updated; a row may be deleted once it is older than
  ``MIN_RETENTION_DAYS`` (30) by the database's own clock, so the server can prune
  history past ``atoll fleet serve --event-retention`` while nobody (not even a
  bug) can remove the recent history. Truncation stays refused.
* ``enrol_tokens.revoked_at``: an operator revoked the token before it was spent.
* ``rollout_hosts.skipped``: why a rollout skips the host (an event when it changes).
* ``rollouts.doc_sha256``: sha256 of the canonical JSON of ``doc``, so a check-in
  finds the parsed rollout in its cache without loading or parsing the document.

Revision ID: 0003_retention
Revises: 0002_rollouts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atoll.control.models import UTCDateTime, doc_digest

revision = "0003_retention"
down_revision = "0002_rollouts"
branch_labels = None
depends_on = None

MIN_RETENTION_DAYS = 30  # the same number as atoll.control.retention.MIN_RETENTION

_PG = f"""
CREATE OR REPLACE FUNCTION atoll_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.time < now() - interval '{MIN_RETENTION_DAYS} days' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'events are append-only (only events older than {MIN_RETENTION_DAYS} days '
        'may be deleted, by the retention)';
END $$;
"""
_SQLITE = [
    "DROP TRIGGER events_no_delete",
    # times are stored naive UTC as 'YYYY-MM-DD HH:MM:SS[.ffffff]', as datetime() writes
    "CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
    f"WHEN OLD.time >= datetime('now', '-{MIN_RETENTION_DAYS} days') "
    "BEGIN SELECT RAISE(ABORT, 'events are append-only (only events older than "
    f"{MIN_RETENTION_DAYS} days may be deleted, by the retention)'); END",
]


def upgrade() -> None:
    op.add_column("enrol_tokens", sa.Column("revoked_at", UTCDateTime(), nullable=True))
    op.add_column("rollouts", sa.Column("doc_sha256", sa.String(64), nullable=True))
    op.add_column("rollout_hosts", sa.Column("skipped", sa.String(300), nullable=True))
    conn = op.get_bind()
    rollouts = sa.table("rollouts", sa.column("id", sa.String()), sa.column("doc", sa.JSON()),
                        sa.column("doc_sha256", sa.String()))
    for rid, doc in conn.execute(sa.select(rollouts.c.id, rollouts.c.doc)).all():
        conn.execute(rollouts.update().where(rollouts.c.id == rid)
                     .values(doc_sha256=doc_digest(doc)))
    if op.get_context().dialect.name == "postgresql":
        op.execute(_PG)
    else:
        for statement in _SQLITE:
            op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("atoll does not downgrade schemas")
