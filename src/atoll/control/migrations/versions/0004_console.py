"""The web console's users and sessions (atoll.control.console.models).

Revision ID: 0004_console
Revises: 0003_retention
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atoll.control.models import UTCDateTime

revision = "0004_console"
down_revision = "0003_retention"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "console_users",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("customer_ids", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_failed_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "console_sessions",
        sa.Column("secret_sha256", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.BigInteger(),
                  sa.ForeignKey("console_users.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
    )


def downgrade() -> None:
    raise NotImplementedError("atoll does not downgrade schemas")
