"""/metrics keeps totals up to a checkpoint instead of counting every row at each scrape

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from worker.migrate import create_index_without_blocking

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _index_created_at()
    op.create_table(
        "metric_totals",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("label", sa.String(length=40), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "label", name=op.f("pk_metric_totals")),
    )
    checkpoint = op.create_table(
        "metric_checkpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_checkpoint")),
    )
    # Nothing folded yet: every existing row is counted from the table until the first
    # scrape moves the checkpoint.
    op.bulk_insert(checkpoint, [{"id": 1, "until": datetime(1970, 1, 1, tzinfo=UTC)}])


def _index_created_at() -> None:
    """The two tables hold every send and email so far (nothing pruned them before this
    release): indexed without blocking sends and deliveries."""
    create_index_without_blocking(op.f("ix_send_jobs_created_at"), "send_jobs", ["created_at"])
    create_index_without_blocking(op.f("ix_outbox_created_at"), "outbox", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_outbox_created_at"), table_name="outbox")
    op.drop_index(op.f("ix_send_jobs_created_at"), table_name="send_jobs")
    op.drop_table("metric_checkpoint")
    op.drop_table("metric_totals")
