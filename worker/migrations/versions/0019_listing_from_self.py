"""listings: whether a delivery is the sender's own (`deliveries.from_self`), so that
"all folders" lists a message sent to oneself once without grouping both folders

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "deliveries",
        sa.Column("from_self", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # Messages sent to oneself are few: the update touches only theirs.
    op.execute(
        "UPDATE deliveries SET from_self = true WHERE EXISTS (SELECT 1 FROM messages"
        " WHERE messages.id = deliveries.message_id AND messages.sender_id = deliveries.user_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as deliveries:
        deliveries.drop_column("from_self")
