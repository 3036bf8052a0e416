"""send jobs keep their payload and attempts, so a lost job can be published again

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("send_jobs") as batch_op:
        batch_op.add_column(sa.Column("payload", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_send_jobs_status_published", ["status", "published_at"])


def downgrade() -> None:
    with op.batch_alter_table("send_jobs") as batch_op:
        batch_op.drop_index("ix_send_jobs_status_published")
        batch_op.drop_column("published_at")
        batch_op.drop_column("attempts")
        batch_op.drop_column("payload")
