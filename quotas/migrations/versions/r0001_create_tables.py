"""Create the quota tables: usage, rules, events, flags, cursors.

Revision ID: 0001
Revises:
Create Date: 2026-11-20

Spelled out rather than derived from the models: a revision must keep creating
the schema of its time when the models have moved on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quota_usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("runtime_type", sa.String(64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("gpu_seconds", sa.Double(), nullable=False),
        sa.Column("gpu_seconds_weighted", sa.Double(), nullable=False),
        sa.Column("cpu_seconds", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_quota_usage"),
        sa.UniqueConstraint(
            "username", "runtime_type", "day", name="uq_quota_usage_username_runtime_type_day"
        ),
    )
    op.create_table(
        "quota_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("gpu_hours_day", sa.Double(), nullable=True),
        sa.Column("gpu_hours_week", sa.Double(), nullable=True),
        sa.Column("max_session_hours", sa.JSON(), nullable=True),
        sa.Column("idle_minutes", sa.Double(), nullable=True),
        sa.Column("max_concurrent", sa.Integer(), nullable=True),
        sa.Column("max_gpus", sa.Integer(), nullable=True),
        sa.CheckConstraint("scope IN ('default', 'group', 'user')", name="ck_quota_rules_scope"),
        sa.PrimaryKeyConstraint("id", name="pk_quota_rules"),
        sa.UniqueConstraint("scope", "subject", name="uq_quota_rules_scope_subject"),
    )
    op.create_table(
        "quota_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("runtime_type", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.CheckConstraint("kind IN ('warn', 'stop', 'flag')", name="ck_quota_events_kind"),
        sa.PrimaryKeyConstraint("id", name="pk_quota_events"),
    )
    op.create_index("ix_quota_events_username_time", "quota_events", ["username", "time"])
    op.create_index("ix_quota_events_time", "quota_events", ["time"])
    op.create_table(
        "quota_flags",
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("flagged_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("block_gpu", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("username", name="pk_quota_flags"),
    )
    op.create_table(
        "quota_cursors",
        sa.Column("runtime_key", sa.String(512), nullable=False),
        sa.Column("last_accounted_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("runtime_key", name="pk_quota_cursors"),
    )


def downgrade() -> None:
    for table in ("quota_cursors", "quota_flags", "quota_events", "quota_rules", "quota_usage"):
        op.drop_table(table)
