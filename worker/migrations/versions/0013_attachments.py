"""attachments: a message's files (`attachments`), their sealed chunks
(`attachment_chunks`), and each group's limits on them

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# worker.models.DEFAULT_MAX_ATTACHMENT_BYTES and DEFAULT_MAX_MESSAGE_BYTES as this
# revision writes them.
MAX_ATTACHMENT_BYTES = str(100 * 1024 * 1024)
MAX_MESSAGE_BYTES = str(250 * 1024 * 1024)


def upgrade() -> None:
    with op.batch_alter_table("groups") as groups:
        groups.add_column(
            sa.Column(
                "max_attachment_bytes",
                sa.BigInteger(),
                nullable=False,
                server_default=MAX_ATTACHMENT_BYTES,
            )
        )
        groups.add_column(
            sa.Column(
                "max_message_bytes",
                sa.BigInteger(),
                nullable=False,
                server_default=MAX_MESSAGE_BYTES,
            )
        )
        groups.add_column(
            sa.Column("attachment_types", sa.Text(), nullable=False, server_default="")
        )
    op.create_table(
        "attachments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guid", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("chunk_bytes", sa.Integer(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("chunks_stored", sa.Integer(), nullable=False),
        sa.Column("content_key", sa.String(length=32), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_attachments_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attachments")),
        sa.UniqueConstraint("guid", name=op.f("uq_attachments_guid")),
    )
    op.create_index(op.f("ix_attachments_message_id"), "attachments", ["message_id"])
    op.create_index(op.f("ix_attachments_content_key"), "attachments", ["content_key"])
    op.create_table(
        "attachment_chunks",
        sa.Column("content_key", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("content_key", "number", name=op.f("pk_attachment_chunks")),
    )


def downgrade() -> None:
    op.drop_table("attachment_chunks")
    op.drop_index(op.f("ix_attachments_content_key"), table_name="attachments")
    op.drop_index(op.f("ix_attachments_message_id"), table_name="attachments")
    op.drop_table("attachments")
    with op.batch_alter_table("groups") as groups:
        groups.drop_column("attachment_types")
        groups.drop_column("max_message_bytes")
        groups.drop_column("max_attachment_bytes")
