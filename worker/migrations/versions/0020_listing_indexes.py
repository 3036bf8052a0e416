"""listings that stay instant at 100,000 messages: the Inbox index carries `from_self`,
the Sent folder's the id (its listing's whole order);
on PostgreSQL, trigram (pg_trgm) GIN indexes on the search text, and the few sent
messages without search text indexed apart. All built CONCURRENTLY.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from alembic import op
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from worker.migrate import create_index_without_blocking, drop_index_without_blocking

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("alembic.runtime.migration")
INBOX_COLUMNS = ["user_id", "recalled", "created_at", "message_id", "expires_at"]
TRIGRAM_INDEXES = {
    "ix_messages_search_text_trgm": "search_text",
    "ix_messages_search_bcc_trgm": "search_bcc",
}


def _trigrams_available() -> bool:
    """pg_trgm, created if missing: a trusted extension since PostgreSQL 13, so the
    database's owner may create it. Without it, text search reads the folder (slower at
    large mailboxes, the same answers)."""
    bind = op.get_bind()
    with op.get_context().autocommit_block():
        try:
            bind.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        except DBAPIError as e:
            logger.warning(
                "pg_trgm could not be created (%s): text search stays without its index; "
                "CREATE EXTENSION pg_trgm as a superuser and run `securesend migrate` again",
                str(e.orig).strip().splitlines()[0],
            )
            return False
    return True


def upgrade() -> None:
    create_index_without_blocking(
        "ix_deliveries_listing", "deliveries", [*INBOX_COLUMNS, "from_self"]
    )
    drop_index_without_blocking("ix_deliveries_inbox", "deliveries")
    # The Sent folder in its listing's order (date, then id): merged with the Inbox's
    # in index order, a page reads its rows, not the folder.
    create_index_without_blocking(
        "ix_messages_sender_listing", "messages", ["sender_id", "sent_at", "id"]
    )
    drop_index_without_blocking("ix_messages_sender_sent", "messages")
    create_index_without_blocking(
        "ix_messages_unwritten", "messages", ["sender_id"], where="search_text IS NULL"
    )
    if op.get_bind().dialect.name != "postgresql" or not _trigrams_available():
        return
    for name, column in TRIGRAM_INDEXES.items():
        create_index_without_blocking(
            name,
            "messages",
            [column],
            postgresql={"postgresql_using": "gin", "postgresql_ops": {column: "gin_trgm_ops"}},
        )


def downgrade() -> None:
    for name in TRIGRAM_INDEXES:
        drop_index_without_blocking(name, "messages")
    drop_index_without_blocking("ix_messages_unwritten", "messages")
    create_index_without_blocking("ix_messages_sender_sent", "messages", ["sender_id", "sent_at"])
    drop_index_without_blocking("ix_messages_sender_listing", "messages")
    create_index_without_blocking("ix_deliveries_inbox", "deliveries", INBOX_COLUMNS)
    drop_index_without_blocking("ix_deliveries_listing", "deliveries")
