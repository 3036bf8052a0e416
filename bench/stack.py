"""The stack every phase of the benchmark measures: securesend's API and workers on a
PostgreSQL database of their own and Redis database 11 (`BENCH_REDIS_URL`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import (
    Stack,
    StackConfig,
    create_postgres_database,
    drop_postgres_database,
    flush_redis,
    free_port,
)

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")


@contextmanager
def bench_stack(
    *, smtp_url: str, var_dir: Path, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """The API and `workers` workers (concurrency 2 each) on a PostgreSQL database of their own
    (dropped afterwards) and Redis database 11 (flushed before and after), delivering
    email to `smtp_url`; `env` adds to (or overrides) the processes' environment."""
    database_url = create_postgres_database()
    flush_redis(REDIS_URL)
    config = StackConfig(
        name="bench",
        database_url=database_url,
        redis_url=REDIS_URL,
        # Long enough that the 1,000 concurrent sends all wait for their answer.
        env={"SMTP_URL": smtp_url, "SEND_WAIT_SECONDS": "300", **(env or {})},
    )
    try:
        stack = Stack.start(config, var_dir=var_dir, api_port=free_port(), workers=workers)
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        drop_postgres_database(database_url)
        flush_redis(REDIS_URL)
