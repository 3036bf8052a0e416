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
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")

from tests.smtp_sink import SmtpSink  # noqa: E402
from tests.support import Stack, StackConfig  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def _unavailable(what: str, error: Exception) -> None:
    reason = f"{what} is not reachable ({type(error).__name__}: {error})"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI needs it", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _create_postgres_database() -> str:
    import psycopg

    name = f"securesend_test_{uuid.uuid4().hex[:12]}"
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as e:
        _unavailable("PostgreSQL at " + POSTGRES_ADMIN_URL, e)
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _drop_postgres_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _flush_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).flushdb()
    except redis.RedisError as e:
        _unavailable("Redis at " + url, e)


def _start_stack(config: StackConfig, var_dir: Path) -> Iterator[Stack]:
    stack = Stack.start(config, var_dir=var_dir, api_port=free_port())
    try:
        yield stack
    finally:
        stack.stop()


# Fast retries, so that tests of failing mail servers finish in seconds.
MAIL_RETRY_ENV = {
    "MAIL_RETRY_BASE_SECONDS": "0.4",
    "MAIL_RETRY_MAX_SECONDS": "2",
    "MAIL_MAX_ATTEMPTS": "6",
}


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
    _flush_redis(REDIS_TEST_URL)
    database_url = _create_postgres_database()
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
        _drop_postgres_database(database_url)
        _flush_redis(REDIS_TEST_URL)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """The same test on the embedded default and on PostgreSQL + Redis."""
    return request.getfixturevalue(f"{request.param}_stack")  # type: ignore[no-any-return]


@pytest.fixture
def unique() -> str:
    """A short random tag for names and addresses no other test uses."""
    return secrets.token_hex(4)


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[Any]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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
