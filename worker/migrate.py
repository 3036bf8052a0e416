"""Bring the schema up to date with Alembic (`securesend migrate`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from worker.db import get_database
from worker.settings import Settings, get_settings

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


def upgrade_to_head(settings: Settings | None = None) -> None:
    """Apply every pending migration. Idempotent; safe to run from several processes at
    once: on PostgreSQL they take turns on an advisory lock (without it, two runs on a new
    database both created the same tables and one failed), on SQLite on the write lock."""
    database = get_database(settings or get_settings())
    config = alembic_config()
    # Alembic owns the transaction (migrations/env.py): a migration may step outside it
    # (0006 builds indexes CONCURRENTLY on PostgreSQL).
    with database.engine.connect() as connection:
        with nullcontext() if database.is_sqlite else _one_migration_at_a_time(connection):
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    logger.info("database schema is at head")
