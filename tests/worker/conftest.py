"""Fixtures of the worker's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import migrated_database
from worker.db import Database
from worker.settings import Settings


@pytest.fixture(params=["sqlite", "postgres"])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of its own: the checkpoint is global, other tests' rows would move it."""
    with migrated_database(request.param, tmp_path) as (_settings, database):
        yield database


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Database]]:
    """A migrated database (and settings reaching it) shared by one module's tests, on
    each backend: for tests that use rows of their own and run in-process."""
    var_dir = tmp_path_factory.mktemp(f"module-{request.param}")
    with migrated_database(request.param, var_dir) as migrated:
        yield migrated
