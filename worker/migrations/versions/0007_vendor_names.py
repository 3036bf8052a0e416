"""what the vendor's SDKs read and search: conversations, saved and retrieved dates,
recall and expiry on deliveries, the text SearchMessages matches, authentication tokens

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One level of a reply tree per statement; deeper trees than this keep NULL (read as
# their own GUID) rather than hold the migration for ever.
MAX_REPLY_DEPTH = 10_000


def upgrade() -> None:
    op.add_column(
        "deliveries",
        sa.Column("recalled", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("deliveries", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    _copy_recall_and_expiry()
    op.add_column("messages", sa.Column("conversation_guid", sa.String(length=32), nullable=True))
    op.add_column("messages", sa.Column("saved_at", sa.DateTime(timezone=True), nullable=True))
    # Messages sent before this stay NULL: SearchMessages matches them the slow way.
    op.add_column("messages", sa.Column("search_text", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("search_bcc", sa.Text(), nullable=True))
    op.add_column(
        "deliveries", sa.Column("retrieved_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "authentication_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_authentication_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_authentication_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_authentication_tokens_token_hash")),
    )
    op.create_index(op.f("ix_authentication_tokens_user_id"), "authentication_tokens", ["user_id"])
    _fill_conversations()


def _copy_recall_and_expiry() -> None:
    """Deliveries of messages recalled or expiring before this migration say so."""
    op.get_bind().execute(
        sa.text(
            "UPDATE deliveries SET"
            " recalled = (SELECT m.status = 'Recalled' FROM messages AS m"
            " WHERE m.id = deliveries.message_id),"
            " expires_at = (SELECT m.expiry_date FROM messages AS m"
            " WHERE m.id = deliveries.message_id)"
            " WHERE message_id IN (SELECT id FROM messages"
            " WHERE status = 'Recalled' OR expiry_date IS NOT NULL)"
        )
    )


def _fill_conversations() -> None:
    """Every existing message gets the GUID of the root of its reply tree: the roots
    their own, then each level of replies its parent's."""
    bind = op.get_bind()
    bind.execute(sa.text("UPDATE messages SET conversation_guid = guid WHERE parent_id IS NULL"))
    for _ in range(MAX_REPLY_DEPTH):
        filled = bind.execute(
            sa.text(
                "UPDATE messages SET conversation_guid = ("
                " SELECT p.conversation_guid FROM messages AS p WHERE p.id = messages.parent_id)"
                " WHERE conversation_guid IS NULL AND EXISTS ("
                " SELECT 1 FROM messages AS p"
                " WHERE p.id = messages.parent_id AND p.conversation_guid IS NOT NULL)"
            )
        )
        if filled.rowcount == 0:
            return


def downgrade() -> None:
    op.drop_index(op.f("ix_authentication_tokens_user_id"), table_name="authentication_tokens")
    op.drop_table("authentication_tokens")
    op.drop_column("deliveries", "expires_at")
    op.drop_column("deliveries", "recalled")
    op.drop_column("deliveries", "retrieved_at")
    op.drop_column("messages", "search_bcc")
    op.drop_column("messages", "search_text")
    op.drop_column("messages", "saved_at")
    op.drop_column("messages", "conversation_guid")
