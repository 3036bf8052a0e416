"""Bring the schema up to date with Alembic (`securesend migrate`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command, op
from alembic.config import Config
from sqlalchemy import Connection, text

from worker.db import Database
from worker.settings import Settings

logger = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


# The key of the PostgreSQL advisory lock that one migrating process holds at a time.
MIGRATION_LOCK_KEY = 7_311_053_715
MIGRATION_LOCK_POLL_SECONDS = 0.2


@contextmanager
def _one_migration_at_a_time(connection: Connection) -> Iterator[None]:
    """Hold PostgreSQL's migration lock: a session lock, which outlives the migration's
    transactions until released. It is tried in short transactions, not waited for in
    one: a waiting statement holds a snapshot, and CREATE INDEX CONCURRENTLY in the
    migration that holds the lock waits for every older snapshot (a deadlock, seen with
    three processes)."""
    waiting = False
    while not connection.scalar(text(f"SELECT pg_try_advisory_lock({MIGRATION_LOCK_KEY})")):
        connection.commit()
        if not waiting:
            logger.info("another process is migrating the database; waiting for it")
            waiting = True
        time.sleep(MIGRATION_LOCK_POLL_SECONDS)
    connection.commit()
    try:
        yield
    finally:
        connection.rollback()  # a failed migration leaves its transaction open
        connection.execute(text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
        connection.commit()


def upgrade_to_head(settings: Settings) -> None:
    """Apply every pending migration. Idempotent; safe to run from several processes at
    once: on PostgreSQL they take turns on an advisory lock (without it, two runs on a new
    database both created the same tables and one failed), on SQLite on the write lock."""
    if settings.is_sqlite:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.effective_database_url, pool_size=1)
    config = alembic_config()
    try:
        # Alembic owns the transaction (migrations/env.py): a migration may step outside
        # it (0006 builds indexes CONCURRENTLY on PostgreSQL).
        with database.engine.connect() as connection:
            with nullcontext() if database.is_sqlite else _one_migration_at_a_time(connection):
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
    finally:
        database.dispose()
    logger.info("database schema is at head")


# --- for migration scripts ----------------------------------------------------------------


def create_index_without_blocking(
    name: str,
    table: str,
    columns: list[str],
    *,
    where: str | None = None,
    postgresql: dict[str, Any] | None = None,
) -> None:
    """Create an index; on PostgreSQL CONCURRENTLY, outside the migration's transaction
    (which commits what came before it), so that sends and deliveries go on while a large
    table is indexed. Call it first in a migration, so that a run interrupted after it runs
    the migration again cleanly. Idempotent: a concurrent build that failed or was
    interrupted leaves an INVALID index, which IF NOT EXISTS would keep; it is dropped and
    built again. `where` makes it a partial index (SQL, the same on both databases);
    `postgresql` holds PostgreSQL's own options (`postgresql_using`, `postgresql_ops`)."""
    partial: dict[str, Any] = (
        {"postgresql_where": text(where), "sqlite_where": text(where)} if where else {}
    )
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(name, table, columns, if_not_exists=True, **partial)
        return
    with op.get_context().autocommit_block():
        valid = op.get_bind().scalar(
            text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
            {"name": name},
        )
        if valid is False:
            op.drop_index(name, table_name=table, postgresql_concurrently=True)
        op.create_index(
            name,
            table,
            columns,
            postgresql_concurrently=True,
            if_not_exists=True,
            **partial,
            **(postgresql or {}),
        )


def drop_index_without_blocking(name: str, table: str) -> None:
    """Drop an index if it exists; on PostgreSQL CONCURRENTLY (see above)."""
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index(name, table_name=table, if_exists=True)
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
