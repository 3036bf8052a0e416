"""worker heartbeats, the sweep's and the retention's leases, and which worker holds an
email's claim

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("held", sa.JSON(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("buried_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.create_index(op.f("ix_workers_heartbeat_at"), "workers", ["heartbeat_at"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("holder", sa.String(length=100), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    # A column without a default: instant on PostgreSQL however large the outbox.
    op.add_column("outbox", sa.Column("claimed_by", sa.String(length=100), nullable=True))
    # The rows the lifeline updates, so that it never has to insert one concurrently.
    op.bulk_insert(
        sa.table(
            "leases",
            sa.column("name", sa.String),
            sa.column("holder", sa.String),
            sa.column("expires_at", sa.DateTime(timezone=True)),
        ),
        [
            {"name": name, "holder": "", "expires_at": datetime(1970, 1, 1, tzinfo=UTC)}
            for name in ("sweep", "prune")
        ],
    )
    op.bulk_insert(
        sa.table(
            "metric_totals",
            sa.column("name", sa.String),
            sa.column("label", sa.String),
            sa.column("value", sa.BigInteger),
        ),
        [{"name": "takeovers", "label": label, "value": 0} for label in ("jobs", "emails")],
    )


def downgrade() -> None:
    op.execute("DELETE FROM metric_totals WHERE name = 'takeovers'")
    op.drop_column("outbox", "claimed_by")
    op.drop_table("leases")
    op.drop_index(op.f("ix_workers_heartbeat_at"), table_name="workers")
    op.drop_table("workers")
