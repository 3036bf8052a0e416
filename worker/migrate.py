"""Bring the schema up to date with Alembic (`securesend migrate`)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

from worker.db import get_database
from worker.settings import Settings, get_settings

logger = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade_to_head(settings: Settings | None = None) -> None:
    """Apply every pending migration. Idempotent; safe to run from several processes at once
    on PostgreSQL (Alembic's version table serialises them) and on SQLite (the write lock)."""
    database = get_database(settings or get_settings())
    config = alembic_config()
    # Alembic owns the transaction (migrations/env.py): a migration may step outside it
    # (0006 builds indexes CONCURRENTLY on PostgreSQL).
    with database.engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    logger.info("database schema is at head")
