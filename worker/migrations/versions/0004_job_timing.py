"""send jobs record when a worker started them and their result code (for metrics)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("send_jobs") as batch_op:
        batch_op.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("result_code", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("send_jobs") as batch_op:
        batch_op.drop_column("result_code")
        batch_op.drop_column("started_at")
