"""the Inbox and Sent folders counted and paged from an index (SearchMessages)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from worker.migrate import create_index_without_blocking, drop_index_without_blocking

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INBOX_COLUMNS = ["user_id", "recalled", "created_at", "message_id", "expires_at"]


def upgrade() -> None:
    """Only index builds, each without blocking writes and each safe to run again: the
    two largest tables of a running service are indexed while it sends."""
    create_index_without_blocking("ix_deliveries_inbox", "deliveries", INBOX_COLUMNS)
    drop_index_without_blocking("ix_deliveries_user_created", "deliveries")
    create_index_without_blocking("ix_messages_sender_sent", "messages", ["sender_id", "sent_at"])
    drop_index_without_blocking("ix_messages_sender_id", "messages")


def downgrade() -> None:
    op.create_index("ix_messages_sender_id", "messages", ["sender_id"])
    op.drop_index("ix_messages_sender_sent", table_name="messages")
    op.create_index("ix_deliveries_user_created", "deliveries", ["user_id", "created_at"])
    op.drop_index("ix_deliveries_inbox", table_name="deliveries")
