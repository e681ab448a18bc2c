"""Version samples: how many hosts of each customer booted each version, once an hour
(atoll.control.history), for the console's plot of versions across the fleet over
time. Pruned with the events past ``--event-retention`` (atoll.control.retention).

Revision ID: 0006_version_samples
Revises: 0005_audit_chain
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atoll.control.models import UTCDateTime

revision = "0006_version_samples"
down_revision = "0005_audit_chain"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "version_samples",
        sa.Column("bucket", UTCDateTime(), primary_key=True),
        sa.Column("customer_id", sa.BigInteger(), primary_key=True),
        sa.Column("version", sa.String(200), primary_key=True),
        sa.Column("hosts", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("atoll does not downgrade schemas")
