"""Fixtures of the worker's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import create_postgres_database, drop_postgres_database
from worker.db import Database
from worker.migrate import upgrade_to_head
from worker.settings import Settings


@pytest.fixture(params=["sqlite", "postgres"])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of its own: the checkpoint is global, other tests' rows would move it."""
    url = create_postgres_database() if request.param == "postgres" else ""
    settings = Settings(var_dir=tmp_path, database_url=url)
    upgrade_to_head(settings)
    database = Database(settings.effective_database_url, pool_size=settings.database_pool_size)
    try:
        yield database
    finally:
        database.dispose()
        if url:
            drop_postgres_database(url)
