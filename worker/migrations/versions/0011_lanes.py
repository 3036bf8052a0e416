"""lanes: send jobs and outbox emails record theirs (interactive or bulk), and the outbox
is claimed interactive first from a partial index of its pending emails

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.migrate import create_index_without_blocking, drop_index_without_blocking

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# /metrics' queue-wait totals before lanes: one histogram per queue, which the histogram
# per queue and lane replaces (its counters start again from zero).
OLD_WAIT_TOTALS = ("send_wait", "mail_wait")
# worker.models.PENDING_CONDITION as this revision writes it.
PENDING_CONDITION = "status IN ('queued', 'retrying')"


def upgrade() -> None:
    # A column with a constant default: instant on PostgreSQL however large the table.
    # What was queued before lanes existed is bulk, as every publisher then was.
    # The index below commits what comes before it on PostgreSQL: a run interrupted after
    # it finds the columns there and goes on.
    for table in ("send_jobs", "outbox"):
        if "lane" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}:
            continue
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(
                sa.Column("lane", sa.SmallInteger(), server_default="1", nullable=False)
            )
    op.execute(
        sa.text("DELETE FROM metric_totals WHERE name IN :names").bindparams(
            sa.bindparam("names", OLD_WAIT_TOTALS, expanding=True)
        )
    )
    create_index_without_blocking(
        "ix_outbox_pending", "outbox", ["lane", "id"], where=PENDING_CONDITION
    )
    drop_index_without_blocking("ix_outbox_status_next", "outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_status_next", "outbox", ["status", "next_attempt_at"])
    op.drop_index("ix_outbox_pending", table_name="outbox")
    for table in ("outbox", "send_jobs"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("lane")
