"""deferred emails: an email the pace held goes back to the queue as `deferred`, which is
pending too; the outbox's partial index of pending emails becomes `ix_outbox_unsent`,
whose condition names it

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from worker.migrate import create_index_without_blocking, drop_index_without_blocking

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# worker.models.PENDING_CONDITION as this revision writes it, and as 0011 did.
PENDING_CONDITION = "status IN ('queued', 'retrying', 'deferred')"
PENDING_BEFORE = "status IN ('queued', 'retrying')"


def upgrade() -> None:
    # The new index first (without blocking writes on PostgreSQL), then the old one goes:
    # claims walk one or the other all along.
    create_index_without_blocking(
        "ix_outbox_unsent", "outbox", ["lane", "id"], where=PENDING_CONDITION
    )
    drop_index_without_blocking("ix_outbox_pending", "outbox")


def downgrade() -> None:
    # An email deferred then is queued again when the pace was unknown.
    op.execute("UPDATE outbox SET status = 'queued' WHERE status = 'deferred'")
    create_index_without_blocking(
        "ix_outbox_pending", "outbox", ["lane", "id"], where=PENDING_BEFORE
    )
    drop_index_without_blocking("ix_outbox_unsent", "outbox")
