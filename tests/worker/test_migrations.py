"""Alembic migrations run on both databases and match the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from tests.support import Stack
from worker.migrate import upgrade_to_head
from worker.models import Base


def test_schema_at_head_matches_the_models(stack: Stack) -> None:
    upgrade_to_head(stack.settings)  # a second run is a no-op
    with stack.database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
        tables = set(inspect(connection).get_table_names())
    assert differences == []
    assert {
        "messages",
        "recipients",
        "deliveries",
        "outbox",
        "invitations",
        "sessions",
        "send_jobs",
        "daily_usage",
        "banned_entries",
        "contacts",
        "groups",
        "users",
    } <= tables
