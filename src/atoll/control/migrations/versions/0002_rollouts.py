"""Rollouts: the rollout documents and each host's wave, phase and progress.

Revision ID: 0002_rollouts
Revises: 0001_core
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atoll.control.models import UTCDateTime

revision = "0002_rollouts"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.BigInteger(), sa.ForeignKey("customers.id"),
                  nullable=True),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("channel", sa.String(200), nullable=False),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("doc", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_rollouts_customer_id", "rollouts", ["customer_id"])
    op.create_index("ix_rollouts_state", "rollouts", ["state"])
    op.create_table(
        "rollout_hosts",
        sa.Column("rollout_id", sa.String(64),
                  sa.ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("host_id", sa.String(36), primary_key=True),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("member", sa.Boolean(), nullable=False),
        sa.Column("phase", sa.String(12), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_rollout_hosts_rollout_phase", "rollout_hosts",
                    ["rollout_id", "phase"])


def downgrade() -> None:
    op.drop_table("rollout_hosts")
    op.drop_table("rollouts")
