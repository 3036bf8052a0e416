"""webhooks: sender groups' endpoints (`webhook_endpoints`), and the outbox delivers their
events too: each row's transport (`outbox.channel`), its endpoint, the group whose
endpoints hear of an email's outcome; the claim's index leads with the channel

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.migrate import create_index_without_blocking, drop_index_without_blocking

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# worker.models.PENDING_CONDITION as this revision writes it.
PENDING_CONDITION = "status IN ('queued', 'retrying', 'deferred')"


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("uid", sa.String(length=40), nullable=False, unique=True),
        sa.Column(
            "group_id",
            sa.Integer(),
            sa.ForeignKey("groups.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("sealed_secret", sa.Text(), nullable=False),
        sa.Column("sealed_previous_secret", sa.Text(), nullable=True),
        sa.Column("previous_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.UniqueConstraint("group_id", "url"),
    )
    with op.batch_alter_table("groups") as groups:
        groups.add_column(sa.Column("webhook_events", sa.Text(), nullable=False, server_default=""))
    with op.batch_alter_table("outbox") as outbox:
        outbox.add_column(
            sa.Column("channel", sa.SmallInteger(), nullable=False, server_default="0")
        )
        outbox.add_column(
            sa.Column(
                "endpoint_id",
                sa.Integer(),
                sa.ForeignKey(
                    "webhook_endpoints.id",
                    name="fk_outbox_endpoint_id_webhook_endpoints",
                    ondelete="CASCADE",
                ),
                nullable=True,
            )
        )
        outbox.add_column(sa.Column("webhook_group_id", sa.Integer(), nullable=True))
    op.create_index("ix_outbox_endpoint_id", "outbox", ["endpoint_id"])
    # The new index first (without blocking writes on PostgreSQL), then the old one goes:
    # claims walk one or the other all along.
    create_index_without_blocking(
        "ix_outbox_due", "outbox", ["channel", "lane", "id"], where=PENDING_CONDITION
    )
    drop_index_without_blocking("ix_outbox_unsent", "outbox")


def downgrade() -> None:
    create_index_without_blocking(
        "ix_outbox_unsent", "outbox", ["lane", "id"], where=PENDING_CONDITION
    )
    drop_index_without_blocking("ix_outbox_due", "outbox")
    op.execute("DELETE FROM outbox WHERE channel <> 0")
    op.drop_index("ix_outbox_endpoint_id", "outbox")
    with op.batch_alter_table("outbox") as outbox:
        outbox.drop_constraint("fk_outbox_endpoint_id_webhook_endpoints", type_="foreignkey")
        outbox.drop_column("webhook_group_id")
        outbox.drop_column("endpoint_id")
        outbox.drop_column("channel")
    with op.batch_alter_table("groups") as groups:
        groups.drop_column("webhook_events")
    op.drop_table("webhook_endpoints")
