"""Shared fixtures: live stacks (API process + Celery worker process) on each backend.

- `sqlite_stack`: the embedded default — SQLite file and the filesystem broker in a temp
  folder; needs no server.
- `postgres_stack`: PostgreSQL (a fresh database per run) and Redis (a database the run
  flushes) of this machine. When either cannot be reached the tests that need it are
  skipped, with the reason, on a developer's machine, and fail when `CI` is set.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")

from tests.smtp_sink import SmtpSink  # noqa: E402
from tests.support import (  # noqa: E402
    MAIL_RETRY_ENV,
    REDIS_TEST_URL,
    Stack,
    StackConfig,
    create_postgres_database,
    drop_postgres_database,
    flush_redis,
    free_port,
)


def _start_stack(config: StackConfig, var_dir: Path) -> Iterator[Stack]:
    stack = Stack.start(config, var_dir=var_dir, api_port=free_port())
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    """The SMTP server the PostgreSQL stack's workers deliver to."""
    with SmtpSink.running(free_port()) as sink:
        yield sink


@pytest.fixture(scope="session")
def sqlite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The embedded default: emails become .eml files under var/outbox/."""
    var_dir = tmp_path_factory.mktemp("embedded-var")
    config = StackConfig(name="sqlite", database_url="", redis_url="", env=MAIL_RETRY_ENV)
    yield from _start_stack(config, var_dir)


@pytest.fixture(scope="session")
def postgres_stack(
    tmp_path_factory: pytest.TempPathFactory, smtp_sink: SmtpSink
) -> Iterator[Stack]:
    """Production parts: PostgreSQL, Redis, and SMTP delivery to `smtp_sink`."""
    flush_redis(REDIS_TEST_URL)
    database_url = create_postgres_database()
    try:
        config = StackConfig(
            name="postgres",
            database_url=database_url,
            redis_url=REDIS_TEST_URL,
            # JSON logs, as in production (SECURESEND_ENV=production would also do it).
            env={**MAIL_RETRY_ENV, "SMTP_URL": smtp_sink.url, "LOG_FORMAT": "json"},
        )
        yield from _start_stack(config, tmp_path_factory.mktemp("postgres-var"))
    finally:
        drop_postgres_database(database_url)
        flush_redis(REDIS_TEST_URL)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """The same test on the embedded default and on PostgreSQL + Redis."""
    return request.getfixturevalue(f"{request.param}_stack")  # type: ignore[no-any-return]


@pytest.fixture
def unique() -> str:
    """A short random tag for names and addresses no other test uses."""
    return secrets.token_hex(4)


@pytest.fixture
def wait_until() -> Any:
    def wait(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(interval)

    return wait
