"""Alembic environment: `worker.migrate.upgrade_to_head` passes its connection; run by
`alembic` itself, the URL comes from the settings object, never from alembic.ini."""

from __future__ import annotations

from alembic import context

from worker.db import Database
from worker.models import Base, included_on
from worker.settings import Settings

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    database = Database(Settings().effective_database_url, pool_size=1)
    try:
        with database.engine.connect() as conn:
            _run(conn)
    finally:
        database.dispose()


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies tables
        compare_type=True,
        include_object=included_on(connection.dialect.name),  # type: ignore[attr-defined]
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
