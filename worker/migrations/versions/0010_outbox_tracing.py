"""outbox emails record when a worker first claimed them (the mail queue's wait on
/metrics) and the trace context of the send that queued them

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns without a default: instant on PostgreSQL however large the outbox.
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.add_column(
            sa.Column("first_claimed_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("trace_parent", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_column("trace_parent")
        batch_op.drop_column("first_claimed_at")
